// Start-up benchmark, comparison side: a bare program that links libtorch and does one 32x32 matmul —
// what any layer that links libtorch directly pays at load.
#include <torch/torch.h>

#include <cstdio>

int main() {
    auto a = torch::rand({32, 32});
    auto b = torch::rand({32, 32});
    auto s = torch::matmul(a, b).sum().item<float>();
    std::printf("cpu %f\n", s);
    return 0;
}
