// The tuning-table key of a CUDA communicator (see core/tune_file.hpp): a
// table measured on another GPU model, placement, driver or library version
// does not apply here.
#pragma once

#include "core/tune_file.hpp"

#include <array>

namespace tpcoll::cuda {

// ranks_share_gpu: every rank on one GPU (as streams or as processes), else
// one GPU per rank.
TuneKey tune_key(int device, int world, bool ranks_share_gpu);

// The physical GPU behind `device`, the same in every process.
std::array<unsigned char, 16> device_uuid(int device);

}  // namespace tpcoll::cuda
