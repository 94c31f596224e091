// Marks functions that both host and device code call.
#pragma once

#if defined(__CUDACC__)
#define TPCOLL_HOST_DEVICE __host__ __device__
#else
#define TPCOLL_HOST_DEVICE
#endif
