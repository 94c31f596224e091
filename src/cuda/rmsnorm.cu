// Instantiates the add + RMSNorm kernels (3 dtypes x {8-element groups,
// element-wise}) and picks one at run time.
#include "cuda/launch.hpp"

#include "cuda/kernels/launch_kernel.cuh"
#include "cuda/kernels/rmsnorm.cuh"

#include <cstdint>

namespace tpcoll::cuda {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

template <typename E>
void launch_typed(const RmsNormArgs& args, bool early_launch, cudaStream_t stream) {
  const bool groups = args.hidden % numerics::kNormGroup == 0 && aligned16(args.x) && aligned16(args.weight) &&
                      aligned16(args.out) &&
                      (args.residual == nullptr || (aligned16(args.residual) && aligned16(args.residual_out)));
  const auto blocks = static_cast<int>((args.rows + kNormWarps - 1) / kNormWarps);
  launch_kernel(groups ? add_rmsnorm_groups_kernel<E> : add_rmsnorm_kernel<E>, blocks, 32 * kNormWarps, early_launch,
                args, stream);
}

}  // namespace

cudaError_t launch_add_rmsnorm(tpcoll_dtype_t dtype, const RmsNormArgs& args, bool early_launch, cudaStream_t stream) {
  switch (dtype) {
    case TPCOLL_FLOAT32: launch_typed<Float32>(args, early_launch, stream); break;
    case TPCOLL_FLOAT16: launch_typed<Float16>(args, early_launch, stream); break;
    case TPCOLL_BFLOAT16: launch_typed<BFloat16>(args, early_launch, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace tpcoll::cuda
