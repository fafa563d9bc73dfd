// The Catch2 main of test_kernels_cpu.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
