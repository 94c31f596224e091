// A POSIX shared-memory segment mapped into this process.
#pragma once

#include <cstddef>
#include <string>

namespace tpcoll {
class Bootstrap;
}

namespace tpcoll::cpu {

class ShmSegment {
 public:
  // Creates a new zero-filled segment (fails if the name exists) with its
  // memory reserved up front, so a full /dev/shm is an error here rather
  // than a SIGBUS later.
  static ShmSegment create(const std::string& name, std::size_t bytes);
  // Maps an existing segment, which must be exactly `bytes` long.
  static ShmSegment open(const std::string& name, std::size_t bytes);
  // Collective: rank 0 creates a segment under a fresh name and the others
  // attach to it; once all have, the name is removed, so nothing is left
  // behind however the processes end. Every rank fails together
  // (TPCOLL_SYSTEM_ERROR) if any rank could not take part.
  static ShmSegment create_collectively(Bootstrap& bootstrap, std::size_t bytes);

  // Unlinks this user's segments whose creating process is gone (a rank 0
  // that crashed while its peers attached); rank 0 of every new
  // communicator calls it. Returns how many.
  static int remove_stale_segments();

  ShmSegment(ShmSegment&& other) noexcept;
  ShmSegment& operator=(ShmSegment&& other) noexcept;
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;
  ~ShmSegment();

  // Removes the name; the mapping lives on until every rank unmaps it.
  void unlink();
  std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  ShmSegment(std::string name, std::byte* data, std::size_t size) : name_(std::move(name)), data_(data), size_(size) {}
  void release();

  std::string name_;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace tpcoll::cpu
