// The Catch2 main of test_executor_io, the tests of the executor's files (executor/io).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
