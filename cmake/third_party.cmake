# Header-only dependencies for a machine without the Debian -dev packages (the GPU machine):
# `scripts/gpu-check --prepare` copies nlohmann/json, CLI11, Catch2 v2 and the Boost headers the
# simulator includes into third_party/ (ignored by git). Each package found on the system wins;
# only a missing one is taken from there, as an INTERFACE IMPORTED target of the usual name.
set(MOETUNE_THIRD_PARTY "${PROJECT_SOURCE_DIR}/third_party")

function(moetune_third_party_target target header)
  if(TARGET ${target})
    return()
  endif()
  if(NOT EXISTS "${MOETUNE_THIRD_PARTY}/include/${header}")
    message(FATAL_ERROR "moetune: ${target} not found on the system nor in ${MOETUNE_THIRD_PARTY} "
                        "(install its -dev package, or run scripts/gpu-check --prepare)")
  endif()
  add_library(${target} INTERFACE IMPORTED GLOBAL)
  set_target_properties(${target} PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${MOETUNE_THIRD_PARTY}/include")
  message(STATUS "moetune: ${target} from ${MOETUNE_THIRD_PARTY}")
endfunction()

find_package(nlohmann_json 3 QUIET)
moetune_third_party_target(nlohmann_json::nlohmann_json nlohmann/json.hpp)
find_package(CLI11 QUIET)
moetune_third_party_target(CLI11::CLI11 CLI/CLI.hpp)
find_package(Catch2 2 QUIET)
if(NOT TARGET Catch2::Catch2 AND EXISTS "${MOETUNE_THIRD_PARTY}/cmake/Catch.cmake")
  list(APPEND CMAKE_MODULE_PATH "${MOETUNE_THIRD_PARTY}/cmake")
endif()
if(MOETUNE_TESTS)
  moetune_third_party_target(Catch2::Catch2 catch2/catch.hpp)
  set(Catch2_FOUND TRUE)
endif()
find_package(Boost QUIET)
if(NOT TARGET Boost::boost AND EXISTS "${MOETUNE_THIRD_PARTY}/include/boost/graph/adjacency_list.hpp")
  moetune_third_party_target(Boost::boost boost/graph/adjacency_list.hpp)
endif()
