// What this build of the engine contains.
#pragma once
#include <string>

namespace colt5 {

// One line: backends, BLAS, build type, compiler.
std::string build_config();
bool blas_compiled();

}  // namespace colt5
