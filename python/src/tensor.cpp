#include "tensor.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <optional>

namespace tpcoll::python {
namespace dl = nanobind::dlpack;

namespace {

// The DLPack dtypes tpcoll takes, and what it calls them.
struct DlpackDtype {
  dl::dtype_code code;
  std::uint8_t bits;
  DType dtype;
};
constexpr DlpackDtype kDtypes[] = {
    {dl::dtype_code::Float, 32, DType::kFloat32},        {dl::dtype_code::Float, 16, DType::kFloat16},
    {dl::dtype_code::Bfloat, 16, DType::kBFloat16},      {dl::dtype_code::Float, 64, DType::kFloat64},
    {dl::dtype_code::Float8_E4M3FN, 8, DType::kFloat8E4M3}, {dl::dtype_code::Float8_E5M2, 8, DType::kFloat8E5M2},
    {dl::dtype_code::Int, 8, DType::kInt8},              {dl::dtype_code::UInt, 8, DType::kUInt8},
    {dl::dtype_code::Int, 32, DType::kInt32},            {dl::dtype_code::Int, 64, DType::kInt64},
};

std::optional<DType> tpcoll_dtype(dl::dtype d) {
  for (const DlpackDtype& known : kDtypes)
    if (d.lanes == 1 && d.code == static_cast<std::uint8_t>(known.code) && d.bits == known.bits) return known.dtype;
  return std::nullopt;
}

[[noreturn]] void invalid(const std::string& message) { throw Error(TPCOLL_INVALID_ARGUMENT, message); }

template <typename Array>
Tensor view_any(const Array& a, const char* name) {
  Tensor t;
  const auto dtype = tpcoll_dtype(a.dtype());
  if (!dtype)
    invalid(fmt::format("{}: DLPack dtype (code {}, {} bits, {} lanes) is not one tpcoll supports "
                        "(float32/16/64, bfloat16, float8 e4m3fn/e5m2, int8/32/64, uint8)",
                        name, a.dtype().code, a.dtype().bits, a.dtype().lanes));
  t.dtype = *dtype;
  switch (a.device_type()) {
    case nanobind::device::cpu::value:
      t.device = kCpuDevice;
      break;
    case nanobind::device::cuda::value:
    case nanobind::device::cuda_managed::value:
      t.device = a.device_id();
      break;
    default:
      invalid(fmt::format("{}: DLPack device type {} is neither the CPU nor CUDA", name, a.device_type()));
  }
  // C-contiguous: strides (in elements) are the running product of the later
  // dims; a dim of size 1 may carry any stride (frameworks disagree on it).
  std::int64_t expected_stride = 1;
  for (std::size_t i = a.ndim(); i-- > 0;) {
    const auto extent = static_cast<std::int64_t>(a.shape(i));
    if (extent != 1 && a.stride(i) != expected_stride)
      invalid(fmt::format("{}: the array is not C-contiguous (dim {} has stride {}, expected {})", name, i,
                          a.stride(i), expected_stride));
    expected_stride *= extent;
  }
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  for (std::size_t i = 0; i < a.ndim(); ++i) t.shape.push_back(static_cast<std::int64_t>(a.shape(i)));
  t.numel = expected_stride;
  return t;
}

std::string device_string(int device) {
  return device == kCpuDevice ? std::string("cpu") : fmt::format("cuda:{}", device);
}

}  // namespace

Tensor view(const InArray& array, const char* name) { return view_any(array, name); }
Tensor view(const OutArray& array, const char* name) { return view_any(array, name); }

std::string shape_string(const std::vector<std::int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

void require_device(const Tensor& t, const char* name, int device) {
  if (t.device != device)
    invalid(fmt::format("{} is on {} but the communicator is on {}", name, device_string(t.device),
                        device_string(device)));
}

void require_shape(const Tensor& t, const char* name, const std::vector<std::int64_t>& shape) {
  if (t.shape != shape)
    invalid(fmt::format("{} has shape {}, expected {}", name, shape_string(t.shape), shape_string(shape)));
}

void require_like(const Tensor& t, const char* name, const Tensor& expected, const char* expected_name) {
  if (t.dtype != expected.dtype)
    invalid(fmt::format("{} is {} but {} is {}", name, dtype_name(t.dtype), expected_name, dtype_name(expected.dtype)));
  if (t.device != expected.device)
    invalid(fmt::format("{} is on {} but {} is on {}", name, device_string(t.device), expected_name,
                        device_string(expected.device)));
  if (t.shape != expected.shape)
    invalid(fmt::format("{} has shape {} but {} has shape {}", name, shape_string(t.shape), expected_name,
                        shape_string(expected.shape)));
}

}  // namespace tpcoll::python
