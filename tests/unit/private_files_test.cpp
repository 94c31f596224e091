// What the rendezvous and the shared memory leave on the machine, and who can
// reach them: a private (0700) run directory with a per-job token, 0600
// segments whose names go once the ranks are attached, and leftovers of
// crashed jobs removed by the next job.
#include "bootstrap/bootstrap.hpp"
#include "bootstrap/job_dir.hpp"
#include "cpu/shm_segment.hpp"

#include "test_util.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using tpcoll::test::ScopedEnv;
using tpcoll::test::throws_error;
using tpcoll::test::unique_key;

// A fresh directory under /tmp, removed at the end of the test; TPCOLL_RUN_DIR
// points below it, at a run directory not yet created.
class RunDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tpcoll-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    run_ = base_ + "/run";
    env_.emplace("TPCOLL_RUN_DIR", run_.c_str());
  }
  void TearDown() override {
    env_.reset();
    std::error_code ec;
    fs::permissions(run_, fs::perms::owner_all, ec);
    fs::remove_all(base_, ec);
  }

  static mode_t mode_of(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  }

  // A process that made `what` and died without cleaning up (as after
  // SIGKILL); returns its pid, now free.
  template <typename Fn>
  static pid_t in_a_process_that_dies(Fn&& what) {
    const pid_t child = ::fork();
    if (child == 0) {
      what();
      ::_exit(0);  // no destructors: the leftovers stay
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return child;
  }

  std::string base_, run_;
  std::optional<ScopedEnv> env_;
};

TEST_F(RunDir, IsCreatedPrivate) {
  EXPECT_EQ(tpcoll::private_run_dir(), run_);
  EXPECT_EQ(mode_of(run_), 0700u);
}

TEST_F(RunDir, OpenToOthersIsRefused) {
  ASSERT_EQ(::mkdir(run_.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(run_.c_str(), 0755), 0);  // whatever the umask
  EXPECT_TRUE(throws_error([] { tpcoll::private_run_dir(); }, TPCOLL_BOOTSTRAP_ERROR, {run_, "0755", "0700"}));
  // A rendezvous there is refused on both sides, before anything is exchanged.
  EXPECT_TRUE(throws_error([] { tpcoll::connect_socket_bootstrap(0, 2, unique_key("open"), 500); },
                           TPCOLL_BOOTSTRAP_ERROR, {"0700"}));
  EXPECT_TRUE(throws_error([] { tpcoll::connect_socket_bootstrap(1, 2, unique_key("open"), 500); },
                           TPCOLL_BOOTSTRAP_ERROR, {"0700"}));
}

TEST_F(RunDir, ALinkIsRefused) {
  ASSERT_EQ(::mkdir((base_ + "/elsewhere").c_str(), 0700), 0);
  ASSERT_EQ(::symlink((base_ + "/elsewhere").c_str(), run_.c_str()), 0);
  EXPECT_TRUE(throws_error([] { tpcoll::private_run_dir(); }, TPCOLL_BOOTSTRAP_ERROR, {"not a directory"}));
}

TEST_F(RunDir, JobDirHoldsAPrivateTokenWhileRankZeroWaits) {
  const std::string key = unique_key("jobdir");
  tpcoll::JobDir a(key, 1);
  tpcoll::JobDir b(key + "-other", 1);
  EXPECT_EQ(a.path(), tpcoll::job_dir_path(run_, key));
  EXPECT_EQ(mode_of(a.path()), 0700u);
  EXPECT_EQ(mode_of(a.path() + "/token"), 0600u);
  EXPECT_EQ(tpcoll::read_job_token(a.path()), a.token());
  EXPECT_NE(a.token(), b.token()) << "tokens are random per job";
  EXPECT_NE(a.token(), tpcoll::wire::Token{});
  a.remove();
  EXPECT_FALSE(fs::exists(a.path()));
  EXPECT_EQ(tpcoll::read_job_token(a.path()), std::nullopt);
}

TEST_F(RunDir, NothingIsLeftOnceTheRanksMet) {
  const std::string key = unique_key("met");
  std::vector<std::unique_ptr<tpcoll::Bootstrap>> boots(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r)
    threads.emplace_back([&, r] { boots[r] = tpcoll::connect_socket_bootstrap(r, 3, key, 10000); });
  for (auto& t : threads) t.join();
  for (const auto& b : boots) ASSERT_NE(b, nullptr);
  EXPECT_TRUE(fs::is_empty(run_)) << "the rendezvous directory outlived the rendezvous";
  int v = 7, all[3] = {};
  threads.clear();
  for (int r = 0; r < 3; ++r) threads.emplace_back([&, r] { boots[r]->all_gather(&v, all, sizeof v); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(all[2], 7);
}

TEST_F(RunDir, ACrashedRankZerosDirectoryIsRemovedByTheNextJob) {
  const std::string crashed = unique_key("crashed");
  const std::string same_key_dir = tpcoll::job_dir_path(run_, crashed);
  // (One process: a second rank 0 would already remove the first's.)
  const pid_t other = in_a_process_that_dies([&] {
    new tpcoll::JobDir(crashed, 1);
    new tpcoll::JobDir(crashed + "-other", 1);
  });
  ASSERT_TRUE(fs::exists(same_key_dir));
  ASSERT_TRUE(fs::exists(tpcoll::job_dir_path(run_, crashed + "-other")));
  // A half-made directory of a crashed process (before its rename).
  ASSERT_EQ(::mkdir((run_ + "/.tmp-" + std::to_string(other) + "-0000").c_str(), 0700), 0);

  // The next rank 0 of the same job takes the place; every other leftover goes too.
  tpcoll::JobDir next(crashed, 1);
  EXPECT_EQ(tpcoll::read_job_token(same_key_dir), next.token());
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(run_)) left.push_back(e.path().string());
  EXPECT_EQ(left, std::vector<std::string>{same_key_dir});
}

TEST_F(RunDir, ALiveRankZerosDirectoryIsKept) {
  const std::string key = unique_key("live");
  tpcoll::JobDir first(key, 1);
  EXPECT_TRUE(throws_error([&] { tpcoll::JobDir second(key, 1); }, TPCOLL_BOOTSTRAP_ERROR,
                           {"already serves", std::to_string(::getpid())}));
  EXPECT_EQ(tpcoll::remove_stale_job_dirs(run_), 0);
  EXPECT_EQ(tpcoll::read_job_token(first.path()), first.token());
}

TEST_F(RunDir, ARunDirTooLongForASocketIsNamed) {
  const std::string deep = base_ + "/" + std::string(120, 'd');
  ScopedEnv env("TPCOLL_RUN_DIR", deep.c_str());
  EXPECT_TRUE(throws_error([] { tpcoll::JobDir d(unique_key("long"), 1); }, TPCOLL_INVALID_ARGUMENT,
                           {"TPCOLL_RUN_DIR", "longer"}));
}

// ---- shared memory ----

bool shm_exists(const std::string& name) {
  const int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
  if (fd >= 0) ::close(fd);
  return fd >= 0;
}

TEST_F(RunDir, SegmentsArePrivateAndTheirNamesGoOnceAttached) {
  // Created 0600 (the umask can only take bits away).
  struct stat st {};
  const std::string name = "/tpcoll-test-private-" + std::to_string(::getpid());
  {
    auto s = tpcoll::cpu::ShmSegment::create(name, 4096);
    ASSERT_EQ(::stat(("/dev/shm" + name).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    s.unlink();
  }

  tpcoll::LocalBootstraps group = tpcoll::make_local_bootstraps(3, 5000);
  std::vector<std::optional<tpcoll::cpu::ShmSegment>> segs(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r)
    threads.emplace_back([&, r] { segs[r].emplace(tpcoll::cpu::ShmSegment::create_collectively(*group.ranks[r], 8192)); });
  for (auto& t : threads) t.join();
  // Mapped by all three (a byte written by one is read by another), named nowhere.
  segs[0]->data()[100] = std::byte{42};
  EXPECT_EQ(segs[2]->data()[100], std::byte{42});
  const std::string mine = "tpcoll-" + std::to_string(::getpid()) + "-";
  for (const auto& e : fs::directory_iterator("/dev/shm"))
    EXPECT_FALSE(e.path().filename().string().starts_with(mine)) << e.path() << " outlived the attach";
}

TEST_F(RunDir, SegmentsOfDeadProcessesAreRemovedAndLiveOnesKept) {
  const pid_t dead = in_a_process_that_dies([] {});
  const std::string stale = "/tpcoll-" + std::to_string(dead) + "-0-deadbeef";
  const std::string live = "/tpcoll-" + std::to_string(::getpid()) + "-999999-0badf00d";
  const std::string foreign = "/tpcoll-notapid-" + std::to_string(dead);
  for (const std::string& n : {stale, live, foreign}) {
    const int fd = ::shm_open(n.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    ASSERT_GE(fd, 0) << n;
    ::close(fd);
  }
  EXPECT_GE(tpcoll::cpu::ShmSegment::remove_stale_segments(), 1);
  EXPECT_FALSE(shm_exists(stale)) << "a dead job's segment is removed";
  EXPECT_TRUE(shm_exists(live)) << "a running process's segment is kept";
  EXPECT_TRUE(shm_exists(foreign)) << "a name tpcoll did not make is kept";
  ::shm_unlink(live.c_str());
  ::shm_unlink(foreign.c_str());
}

}  // namespace
