# Writes the model files that libsda's model-workload tests load, with the project's own torch
# (.venv): nothing is downloaded. Usage: python model_gen.py OUT_DIR NAME...
#
# Each NAME is one file in OUT_DIR:
#   conv.pt      TorchScript (scripted): two Conv1d layers over [batch, 2, length]
#   gru.pt       TorchScript (scripted): a GRU and a linear head over [batch, time, 8]
#   lstm.pt      TorchScript (scripted): an LSTM returning the tuple (output, (h, c)) -> tensors only
#   attention.pt TorchScript (scripted): a transformer encoder layer over [batch, time, 16]
#   fixed.pt     TorchScript (traced at batch 1): a reshape with the traced batch hard-coded
#   dict.pt      TorchScript (scripted): returns a dict, so it cannot be trained
#   half.pt      TorchScript (scripted): the conv model in float16
#   conv.pt2     AOTInductor package (torch._inductor.aoti_compile_and_package) of a tiny conv
#                model with a dynamic batch, compiled for the CPU (runs a C++ compiler)
import os
import sys

# AOTInductor's compile cache goes beside the model files, which the tests delete, instead of the
# shared /tmp/torchinductor_$USER (about 1.5 GB after a test run). Set before torch reads it.
if len(sys.argv) > 1:
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(sys.argv[1], "inductor-cache"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.manual_seed(0)


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(2, 16, 65, padding=32)
        self.b = nn.Conv1d(16, 2, 65, padding=32)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Gru(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(8, 32, batch_first=True)
        self.head = nn.Linear(32, 8)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y)


class Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(8, 32, batch_first=True)

    def forward(self, x):
        y, (h, c) = self.rnn(x)
        return y, h, c


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(16, 4, 64, dropout=0.0, batch_first=True)

    def forward(self, x):
        return self.layer(x)


class Fixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2 * 100, 4)

    def forward(self, x):
        # The batch of the example (1) is written into the graph: any other batch fails.
        return self.lin(x.reshape(1, 2 * 100))


class Dict(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return {"y": self.lin(x)}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 9, padding=4)

    def forward(self, x):
        return torch.tanh(self.conv(x))


def write(name, path):
    if name == "conv.pt":
        torch.jit.script(Conv()).save(path)
    elif name == "gru.pt":
        torch.jit.script(Gru()).save(path)
    elif name == "lstm.pt":
        torch.jit.script(Lstm()).save(path)
    elif name == "attention.pt":
        torch.jit.script(Attention().eval()).save(path)
    elif name == "fixed.pt":
        torch.jit.trace(Fixed(), torch.randn(1, 2, 100)).save(path)
    elif name == "dict.pt":
        torch.jit.script(Dict()).save(path)
    elif name == "half.pt":
        torch.jit.script(Conv().half()).save(path)
    elif name == "conv.pt2":
        model = Tiny().eval()
        batch = torch.export.Dim("batch", min=1, max=4096)
        with torch.no_grad():
            program = torch.export.export(
                model, (torch.randn(2, 1, 256),), dynamic_shapes={"x": {0: batch}}
            )
            torch._inductor.aoti_compile_and_package(program, package_path=path)
    else:
        raise SystemExit(f"unknown model file {name}")


def main():
    out = sys.argv[1]
    for name in sys.argv[2:]:
        write(name, f"{out}/{name}")


if __name__ == "__main__":
    main()
