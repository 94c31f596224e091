// A DLPack array (NumPy, PyTorch, CuPy, JAX, ...) seen as what the C API
// takes: a pointer, a tpcoll dtype, a shape and a device. The library gets
// raw pointers and cannot see sizes, layouts or devices, so those are checked
// here, before any call can write past a buffer or into another device.
#pragma once

#include <nanobind/ndarray.h>
#include <tpcoll/tpcoll.hpp>

#include <cstdint>
#include <vector>

namespace tpcoll::python {

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  std::vector<std::int64_t> shape;
  std::int64_t numel = 1;
  int device = kCpuDevice;  // a CUDA ordinal, or kCpuDevice
};

using InArray = nanobind::ndarray<nanobind::ro>;  // read-only arrays are fine as inputs
using OutArray = nanobind::ndarray<>;             // outputs must be writable

// Checks that the array is C-contiguous with a dtype tpcoll knows, on the
// CPU or a CUDA device; throws tpcoll::Error (TPCOLL_INVALID_ARGUMENT) naming
// `name` otherwise.
Tensor view(const InArray& array, const char* name);
Tensor view(const OutArray& array, const char* name);

// Throws unless `t` matches `expected` in dtype, shape and device.
void require_like(const Tensor& t, const char* name, const Tensor& expected, const char* expected_name);
void require_shape(const Tensor& t, const char* name, const std::vector<std::int64_t>& shape);
void require_device(const Tensor& t, const char* name, int device);

// "[2, 3]", for messages.
std::string shape_string(const std::vector<std::int64_t>& shape);

}  // namespace tpcoll::python
