// Loading NCCL at run time: a clear error for a missing or foreign library,
// and a real load of the toolkit's libnccl where the build found one.
#include "core/error.hpp"
#include "nccl/nccl_library.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace {

// The message of the error that loading with TPCOLL_NCCL_LIB=path throws.
std::string load_error(const char* path) {
  setenv("TPCOLL_NCCL_LIB", path, 1);
  std::string message;
  try {
    tpcoll::nccl::load_library();
  } catch (const tpcoll::Error& e) {
    EXPECT_EQ(e.code(), TPCOLL_UNSUPPORTED);
    message = e.what();
  }
  unsetenv("TPCOLL_NCCL_LIB");
  return message;
}

TEST(NcclLibrary, MissingLibraryNamesTheVariable) {
  const std::string message = load_error("/nonexistent/libnccl.so.2");
  EXPECT_NE(message.find("TPCOLL_NCCL_LIB"), std::string::npos) << message;
  EXPECT_NE(message.find("/nonexistent/libnccl.so.2"), std::string::npos) << message;
}

TEST(NcclLibrary, ALibraryWithoutNcclIsRefused) {
  const std::string message = load_error("libm.so.6");
  EXPECT_NE(message.find("has no ncclGetVersion"), std::string::npos) << message;
}

TEST(NcclLibrary, LoadsTheToolkitsNccl) {
#ifdef TPCOLL_TEST_NCCL_LIB
  setenv("TPCOLL_NCCL_LIB", TPCOLL_TEST_NCCL_LIB, 1);
  const tpcoll::nccl::Library& lib = tpcoll::nccl::load_library();
  unsetenv("TPCOLL_NCCL_LIB");
  EXPECT_GE(lib.version, 20000);
  EXPECT_NE(std::string(lib.get_error_string(ncclInvalidArgument)), "");
  EXPECT_NE(lib.all_reduce, nullptr);
  EXPECT_NE(lib.reduce_scatter, nullptr);
#else
  GTEST_SKIP() << "the build found no libnccl to load";
#endif
}

}  // namespace
