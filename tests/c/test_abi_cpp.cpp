// The same ABI tests compiled as C++: the header must be usable from C++ hosts unchanged.
#include "test_abi.c"
