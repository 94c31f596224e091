// tpcoll._tpcoll: the extension module. Enums, the error type and the
// communicator; python/tpcoll/ adds allocation and the torch layer on top.
#include "communicator.hpp"

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <fmt/format.h>

namespace nb = nanobind;
using namespace nb::literals;

namespace tpcoll::python {
namespace {

void bind_enums(nb::module_& m) {
  nb::enum_<DType>(m, "DType")
      .value("FLOAT32", DType::kFloat32)
      .value("FLOAT16", DType::kFloat16)
      .value("BFLOAT16", DType::kBFloat16)
      .value("FLOAT64", DType::kFloat64)
      .value("FLOAT8_E4M3", DType::kFloat8E4M3)
      .value("FLOAT8_E5M2", DType::kFloat8E5M2)
      .value("INT8", DType::kInt8)
      .value("UINT8", DType::kUInt8)
      .value("INT32", DType::kInt32)
      .value("INT64", DType::kInt64);
  nb::enum_<Op>(m, "Op")
      .value("ALL_REDUCE", Op::kAllReduce)
      .value("ALL_GATHER", Op::kAllGather)
      .value("FUSED_ALLREDUCE_RMSNORM", Op::kFusedAllReduceRmsNorm)
      .value("REDUCE_SCATTER", Op::kReduceScatter)
      .value("FUSED_REDUCE_SCATTER_RMSNORM", Op::kFusedReduceScatterRmsNorm)
      .value("FUSED_ALLREDUCE_RMSNORM_FP8", Op::kFusedAllReduceRmsNormFp8);
  nb::enum_<Fp8Scaling>(m, "Fp8Scaling")
      .value("STATIC", Fp8Scaling::kStatic)
      .value("PER_TOKEN", Fp8Scaling::kPerToken);
  nb::enum_<Algo>(m, "Algo")
      .value("ONESHOT", Algo::kOneShot)
      .value("TWOSHOT", Algo::kTwoShot)
      .value("UNFUSED", Algo::kUnfused)
      .value("FALLBACK", Algo::kFallback);
  nb::enum_<tpcoll_result_t>(m, "Result")
      .value("SUCCESS", TPCOLL_SUCCESS)
      .value("INVALID_ARGUMENT", TPCOLL_INVALID_ARGUMENT)
      .value("UNSUPPORTED", TPCOLL_UNSUPPORTED)
      .value("TIMEOUT", TPCOLL_TIMEOUT)
      .value("MISMATCH", TPCOLL_MISMATCH)
      .value("BOOTSTRAP_ERROR", TPCOLL_BOOTSTRAP_ERROR)
      .value("SYSTEM_ERROR", TPCOLL_SYSTEM_ERROR)
      .value("CUDA_ERROR", TPCOLL_CUDA_ERROR)
      .value("INTERNAL_ERROR", TPCOLL_INTERNAL_ERROR)
      .value("ABORTED", TPCOLL_ABORTED);
}

// tpcoll::Error becomes tpcoll.Error (a RuntimeError) with the library's
// message and its result code in `.code`, so callers can tell a timeout from
// a mismatch without parsing text.
void bind_error(nb::module_& m) {
  PyObject* type = PyErr_NewExceptionWithDoc(
      "tpcoll.Error", "A tpcoll call failed: the library's message, and its Result in .code.",
      PyExc_RuntimeError, nullptr);
  m.attr("Error") = nb::steal(type);
  nb::register_exception_translator(
      [](const std::exception_ptr& p, void* payload) {
        try {
          std::rethrow_exception(p);
        } catch (const Error& e) {
          const nb::handle error_type(static_cast<PyObject*>(payload));
          nb::object error = error_type(e.what());
          error.attr("code") = nb::cast(e.code());
          PyErr_SetObject(error_type.ptr(), error.ptr());
        }
      },
      type);
}

void bind_plan_info(nb::module_& m) {
  nb::class_<PlanInfo>(m, "PlanInfo")
      .def_ro("algo", &PlanInfo::algo)
      .def_ro("backend", &PlanInfo::backend)
      .def_ro("algorithm", &PlanInfo::algorithm)
      .def_ro("chunk_bytes", &PlanInfo::chunk_bytes)
      .def_ro("steps", &PlanInfo::steps)
      .def_ro("reason", &PlanInfo::reason)
      .def("__repr__", [](const PlanInfo& p) {
        return fmt::format("PlanInfo(backend='{}', algorithm='{}', chunk_bytes={}, steps={}, reason='{}')",
                           p.backend, p.algorithm, p.chunk_bytes, p.steps, p.reason);
      });
}

void bind_communicator(nb::module_& m) {
  nb::class_<PyCommunicator>(m, "_Communicator")
      .def(nb::init<int, int, int, std::string, nb::object>(), "rank"_a, "world_size"_a, "device"_a, "job_id"_a,
           "allgather"_a.none())
      .def_prop_ro("rank", &PyCommunicator::rank)
      .def_prop_ro("world_size", &PyCommunicator::world_size)
      .def_prop_ro("device_ordinal", &PyCommunicator::device)
      .def_prop_ro("closed", &PyCommunicator::closed)
      .def("close", &PyCommunicator::close)
      .def("_all_reduce", &PyCommunicator::all_reduce, "input"_a, "output"_a, "stream"_a)
      .def("_all_gather", &PyCommunicator::all_gather, "input"_a, "output"_a, "dim"_a, "stream"_a)
      .def("_fused_allreduce_residual_rmsnorm", &PyCommunicator::fused_allreduce_residual_rmsnorm, "x"_a,
           "residual"_a.none(), "weight"_a, "out"_a, "residual_out"_a.none(), "eps"_a, "stream"_a)
      .def("_fused_allreduce_residual_rmsnorm_fp8", &PyCommunicator::fused_allreduce_residual_rmsnorm_fp8, "x"_a,
           "residual"_a.none(), "weight"_a, "out"_a.none(), "residual_out"_a.none(), "out_fp8"_a, "scaling"_a,
           "static_scale"_a, "row_scales"_a.none(), "eps"_a, "stream"_a)
      .def("_reduce_scatter", &PyCommunicator::reduce_scatter, "input"_a, "output"_a, "stream"_a)
      .def("_fused_reduce_scatter_residual_rmsnorm", &PyCommunicator::fused_reduce_scatter_residual_rmsnorm, "x"_a,
           "residual"_a.none(), "weight"_a, "out"_a, "residual_out"_a.none(), "eps"_a, "stream"_a)
      .def("_add_rmsnorm", &PyCommunicator::add_rmsnorm, "x"_a, "residual"_a, "weight"_a, "out"_a,
           "residual_out"_a, "eps"_a, "stream"_a)
      .def("_plan", &PyCommunicator::plan, "op"_a, "dtype"_a, "shape"_a, "dim"_a)
      .def("_force_algo", &PyCommunicator::force_algo, "algo"_a.none())
      .def("check_async_error", &PyCommunicator::check_async_error,
           "Raises tpcoll.Error if enqueued GPU work failed after its call returned (a peer timed out "
           "or ran a different call); such an error also fails every later call.")
      .def("abort", &PyCommunicator::abort,
           "Stops the communicator on every rank: their waiting ops fail with Result.ABORTED, and so does "
           "every later call (tpcoll_comm_abort).");
}

// What `tpcoll run` set for this process: (rank, world_size, device, job_id).
nb::tuple config_from_env() {
  const Config c = Config::from_env();
  return nb::make_tuple(c.rank, c.world_size, c.device, c.job_id);
}

}  // namespace
}  // namespace tpcoll::python

NB_MODULE(_tpcoll, m) {
  using namespace tpcoll::python;
  // Communicators may live until interpreter exit (torch.compile's caches and
  // the torch layer's registry hold them); nanobind would report those as leaks.
  nb::set_leak_warnings(false);
  bind_enums(m);
  bind_error(m);
  bind_plan_info(m);
  bind_communicator(m);
  m.def("config_from_env", &config_from_env);
  m.attr("CPU_DEVICE") = tpcoll::kCpuDevice;
}
