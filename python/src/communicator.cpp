#include "communicator.hpp"

#include <fmt/format.h>
#include <nanobind/stl/string.h>

#include <cstring>

namespace nb = nanobind;

namespace tpcoll::python {
namespace {

[[noreturn]] void invalid(const std::string& message) { throw Error(TPCOLL_INVALID_ARGUMENT, message); }

// The Python callable behind the C API's all-gather callback. The library
// calls it with the GIL released (or from a thread without it), and reports a
// failure as a result code only, so the Python error's text is kept here for
// the message the caller finally sees.
struct PythonAllGather {
  nb::object fn;
  int world_size;
  std::shared_ptr<std::string> error;

  void operator()(const void* send, void* recv, std::size_t bytes) const {
    nb::gil_scoped_acquire gil;
    error->clear();
    try {
      const nb::object result = fn(nb::bytes(send, bytes));
      Py_buffer buffer;
      if (PyObject_GetBuffer(result.ptr(), &buffer, PyBUF_C_CONTIGUOUS) != 0) throw nb::python_error();
      const std::size_t expected = bytes * static_cast<std::size_t>(world_size);
      const auto got = static_cast<std::size_t>(buffer.len);
      if (got == expected) std::memcpy(recv, buffer.buf, expected);
      PyBuffer_Release(&buffer);
      if (got != expected)
        throw std::runtime_error(fmt::format("it returned {} bytes, expected {} ({} ranks x {})", got, expected,
                                             world_size, bytes));
    } catch (const std::exception& e) {
      *error = e.what();  // a Python error must die here, while the GIL is held
    }
    if (!error->empty()) throw std::runtime_error(*error);
  }
};

// A cudaStream_t as Python passes it (torch.cuda.Stream.cuda_stream); 0 for a
// CPU communicator, whose ops are synchronous.
void* as_stream(std::uintptr_t stream) { return reinterpret_cast<void*>(stream); }

}  // namespace

PyCommunicator::PyCommunicator(int rank, int world_size, int device, std::string job_id, nb::object allgather)
    : rank_(rank), world_size_(world_size), device_(device) {
  Config config;
  config.rank = rank;
  config.world_size = world_size;
  config.device = device;
  config.job_id = std::move(job_id);
  auto callback_error = std::make_shared<std::string>();
  if (!allgather.is_none()) config.allgather = PythonAllGather{std::move(allgather), world_size, callback_error};
  try {
    // Creation waits for every peer: other Python threads may run meanwhile.
    nb::gil_scoped_release release;
    comm_ = std::make_unique<Communicator>(std::move(config));
  } catch (const Error& e) {
    if (callback_error->empty()) throw;
    throw Error(e.code(), fmt::format("{}: {}", e.what(), *callback_error));
  }
}

void PyCommunicator::close() {
  // The callback holds Python objects: release them with the GIL held.
  comm_.reset();
}

Communicator& PyCommunicator::comm() const {
  if (!comm_) invalid(fmt::format("the communicator of rank {} is closed", rank_));
  return *comm_;
}

void PyCommunicator::all_reduce(const InArray& in, const OutArray& out, std::uintptr_t stream) {
  Communicator& c = comm();
  const Tensor i = view(in, "input");
  const Tensor o = view(out, "output");
  require_device(i, "input", device_);
  require_like(o, "output", i, "input");
  nb::gil_scoped_release release;
  c.all_reduce(i.data, o.data, static_cast<std::size_t>(i.numel), i.dtype, as_stream(stream));
}

void PyCommunicator::all_gather(const InArray& in, const OutArray& out, int dim, std::uintptr_t stream) {
  Communicator& c = comm();
  const Tensor i = view(in, "input");
  const Tensor o = view(out, "output");
  require_device(i, "input", device_);
  const int ndim = static_cast<int>(i.shape.size());
  if (dim < -ndim || dim >= ndim) invalid(fmt::format("dim {} is out of range for a {}-d input", dim, ndim));
  if (dim < 0) dim += ndim;
  std::vector<std::int64_t> gathered = i.shape;
  gathered[static_cast<std::size_t>(dim)] *= world_size_;
  Tensor expected = i;
  expected.shape = gathered;
  require_like(o, "output", expected, "the gathered input");
  nb::gil_scoped_release release;
  c.all_gather(i.data, o.data, i.dtype, i.shape, dim, as_stream(stream));
}

Tensor PyCommunicator::share_of(const Tensor& x, const char* name) const {
  if (x.shape.empty() || x.shape[0] % world_size_ != 0)
    invalid(fmt::format("{} of shape {} does not split along dim 0 into {} equal shares", name, shape_string(x.shape),
                        world_size_));
  Tensor share = x;
  share.shape[0] /= world_size_;
  return share;
}

void PyCommunicator::reduce_scatter(const InArray& in, const OutArray& out, std::uintptr_t stream) {
  Communicator& c = comm();
  const Tensor i = view(in, "input");
  const Tensor o = view(out, "output");
  require_device(i, "input", device_);
  require_like(o, "output", share_of(i, "input"), "this rank's share of the input");
  nb::gil_scoped_release release;
  c.reduce_scatter(i.data, o.data, static_cast<std::size_t>(i.numel), i.dtype, as_stream(stream));
}

PyCommunicator::NormCall PyCommunicator::check_norm(const InArray& x, const InArray* residual,
                                                    const InArray& weight, const OutArray* out,
                                                    const OutArray* residual_out, bool share) const {
  if ((residual != nullptr) != (residual_out != nullptr))
    invalid("residual and residual_out go together: pass both or neither");
  NormCall call{view(x, "x"), 0, 0};
  const Tensor& t = call.x;
  require_device(t, "x", device_);
  if (t.shape.empty()) invalid("x must have at least one dim (the last is the hidden size)");
  call.hidden = static_cast<std::size_t>(t.shape.back());
  call.tokens = call.hidden == 0 ? 0 : static_cast<std::size_t>(t.numel) / call.hidden;
  Tensor weight_like = t;
  weight_like.shape = {t.shape.back()};
  require_like(view(weight, "weight"), "weight", weight_like, "x's last dim");
  const Tensor rows = share ? share_of(t, "x") : t;
  const char* rows_name = share ? "this rank's share of x" : "x";
  if (out) require_like(view(*out, "out"), "out", rows, rows_name);
  if (residual) require_like(view(*residual, "residual"), "residual", rows, rows_name);
  if (residual_out) require_like(view(*residual_out, "residual_out"), "residual_out", rows, rows_name);
  return call;
}

void PyCommunicator::fused_allreduce_residual_rmsnorm(const InArray& x, const std::optional<InArray>& residual,
                                                      const InArray& weight, const OutArray& out,
                                                      const std::optional<OutArray>& residual_out, float eps,
                                                      std::uintptr_t stream) {
  Communicator& c = comm();
  const NormCall n = check_norm(x, residual ? &*residual : nullptr, weight, &out,
                                residual_out ? &*residual_out : nullptr);
  const void* res = residual ? residual->data() : nullptr;
  void* res_out = residual_out ? residual_out->data() : nullptr;
  nb::gil_scoped_release release;
  c.fused_allreduce_residual_rmsnorm(n.x.data, res, weight.data(), out.data(), res_out, n.tokens, n.hidden,
                                     n.x.dtype, eps, as_stream(stream));
}

void PyCommunicator::fused_allreduce_residual_rmsnorm_fp8(
    const InArray& x, const std::optional<InArray>& residual, const InArray& weight, const std::optional<OutArray>& out,
    const std::optional<OutArray>& residual_out, const OutArray& out_fp8, Fp8Scaling scaling, float static_scale,
    const std::optional<OutArray>& row_scales, float eps, std::uintptr_t stream) {
  Communicator& c = comm();
  const NormCall n = check_norm(x, residual ? &*residual : nullptr, weight, out ? &*out : nullptr,
                                residual_out ? &*residual_out : nullptr);
  // The codes: E4M3 bytes, as float8_e4m3 or (where a framework has no FP8
  // type, e.g. NumPy) uint8.
  const Tensor codes = view(out_fp8, "out_fp8");
  Tensor codes_like = n.x;
  codes_like.dtype = codes.dtype == DType::kUInt8 ? DType::kUInt8 : DType::kFloat8E4M3;
  require_like(codes, "out_fp8", codes_like, "x's shape in float8_e4m3 or uint8");
  float* scales = nullptr;
  if (scaling == Fp8Scaling::kPerToken) {
    if (!row_scales) invalid("per-token scaling returns row_scales: pass a float32 array of one scale per token");
    const Tensor s = view(*row_scales, "row_scales");
    Tensor scales_like = n.x;
    scales_like.dtype = DType::kFloat32;
    scales_like.shape.pop_back();
    require_like(s, "row_scales", scales_like, "x's shape without its last dim, float32");
    scales = static_cast<float*>(s.data);
  }
  const void* res = residual ? residual->data() : nullptr;
  void* res_out = residual_out ? residual_out->data() : nullptr;
  nb::gil_scoped_release release;
  c.fused_allreduce_residual_rmsnorm_fp8(n.x.data, res, weight.data(), out ? out->data() : nullptr, res_out,
                                         codes.data, scaling, static_scale, scales, n.tokens, n.hidden, n.x.dtype,
                                         eps, as_stream(stream));
}

void PyCommunicator::fused_reduce_scatter_residual_rmsnorm(const InArray& x, const std::optional<InArray>& residual,
                                                           const InArray& weight, const OutArray& out,
                                                           const std::optional<OutArray>& residual_out, float eps,
                                                           std::uintptr_t stream) {
  Communicator& c = comm();
  const NormCall n = check_norm(x, residual ? &*residual : nullptr, weight, &out,
                                residual_out ? &*residual_out : nullptr, /*share=*/true);
  const void* res = residual ? residual->data() : nullptr;
  void* res_out = residual_out ? residual_out->data() : nullptr;
  nb::gil_scoped_release release;
  c.fused_reduce_scatter_residual_rmsnorm(n.x.data, res, weight.data(), out.data(), res_out, n.tokens, n.hidden,
                                          n.x.dtype, eps, as_stream(stream));
}

void PyCommunicator::add_rmsnorm(const InArray& x, const InArray& residual, const InArray& weight,
                                 const OutArray& out, const OutArray& residual_out, float eps,
                                 std::uintptr_t stream) {
  Communicator& c = comm();
  const NormCall n = check_norm(x, &residual, weight, &out, &residual_out);
  nb::gil_scoped_release release;
  c.add_rmsnorm(n.x.data, residual.data(), weight.data(), out.data(), residual_out.data(), n.tokens, n.hidden,
                n.x.dtype, eps, as_stream(stream));
}

PlanInfo PyCommunicator::plan(Op op, DType dtype, const std::vector<std::int64_t>& shape, int dim) const {
  const int ndim = static_cast<int>(shape.size());
  if (op == Op::kAllGather && dim < 0) dim += ndim;
  return comm().plan(op, dtype, shape, dim);
}

void PyCommunicator::check_async_error() const {
  tpcoll_result_t result = TPCOLL_SUCCESS;
  check(tpcoll_comm_get_async_error(comm().native(), &result));
  check(result);  // the message is this thread's last error, set by the query
}

void PyCommunicator::force_algo(std::optional<Algo> algo) { comm().force_algo(algo); }

void PyCommunicator::abort() { comm().abort(); }

}  // namespace tpcoll::python
