// Device memory that an object holds for its whole life: allocated at
// construction and freed at destruction, never moved in between, so that a
// captured graph may keep its address.
#pragma once

#include <cstddef>

namespace tpcoll::cuda {

class DeviceBlock {
 public:
  // `bytes` on `device` (bytes 0: no block); `what` is the error's context
  // ("allocating the ...").
  DeviceBlock(int device, std::size_t bytes, const char* what);
  ~DeviceBlock();
  DeviceBlock(const DeviceBlock&) = delete;
  DeviceBlock& operator=(const DeviceBlock&) = delete;
  int device() const { return device_; }
  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }

 private:
  int device_;
  std::size_t bytes_;
  void* data_ = nullptr;
};

}  // namespace tpcoll::cuda
