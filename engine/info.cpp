#include "engine/info.h"

namespace colt5 {

#ifndef COLT5_CONFIG_SUMMARY
#define COLT5_CONFIG_SUMMARY "unknown"
#endif

std::string build_config() { return COLT5_CONFIG_SUMMARY; }

bool blas_compiled() {
#ifdef COLT5_WITH_BLAS
  return true;
#else
  return false;
#endif
}

}  // namespace colt5
