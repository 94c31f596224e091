// `tpcoll check`: what this machine offers and what tpcoll will do with it.
#pragma once

namespace tpcoll::tools {

// Prints GPUs, peer access between them, MPS, where `ranks` ranks placed by
// TPCOLL_DEVICE=auto would land (which share a GPU), buffer sizes and the
// paths tpcoll will take. Returns the exit code.
int check(int ranks);

}  // namespace tpcoll::tools
