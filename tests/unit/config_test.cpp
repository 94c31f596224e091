// Environment parameters (src/core/config.hpp): defaults, parsing, and errors
// that name the variable.
#include "core/config.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

namespace {

using tpcoll::test::ScopedEnv;
using tpcoll::test::throws_error;

constexpr tpcoll::EnvParam kInt{"TPCOLL_UNIT_TEST_INT", "42", "an integer for the tests"};
constexpr tpcoll::EnvParam kBool{"TPCOLL_UNIT_TEST_BOOL", "0", "a boolean for the tests"};

TEST(EnvParam, ValueFallsBackToTheDefaultWhenUnsetOrEmpty) {
  {
    ScopedEnv env(kInt.name, nullptr);
    EXPECT_EQ(kInt.value(), "42");
  }
  {
    ScopedEnv env(kInt.name, "");
    EXPECT_EQ(kInt.value(), "42");
  }
  {
    ScopedEnv env(kInt.name, "7");
    EXPECT_EQ(kInt.value(), "7");
  }
}

TEST(EnvParam, AsIntParsesIntegers) {
  {
    ScopedEnv env(kInt.name, nullptr);
    EXPECT_EQ(kInt.as_int(), 42);
  }
  for (const auto& [text, value] : std::initializer_list<std::pair<const char*, std::int64_t>>{
           {"0", 0}, {"123", 123}, {"-7", -7}, {"9223372036854775807", INT64_MAX}, {"-9223372036854775808", INT64_MIN}}) {
    ScopedEnv env(kInt.name, text);
    EXPECT_EQ(kInt.as_int(), value) << text;
  }
}

TEST(EnvParam, AsIntRejectsNonIntegersNamingTheVariable) {
  for (const char* bad : {"abc", "12abc", " 12", "12 ", "1.5", "0x10", "1e3", "--1", "+-1", "9223372036854775808",
                          "99999999999999999999"}) {
    ScopedEnv env(kInt.name, bad);
    EXPECT_TRUE(throws_error([] { (void)kInt.as_int(); }, TPCOLL_INVALID_ARGUMENT, {"TPCOLL_UNIT_TEST_INT", bad}))
        << "value \"" << bad << "\"";
  }
}

TEST(EnvParam, AsIntRejectsABadDefault) {
  constexpr tpcoll::EnvParam bad_default{"TPCOLL_UNIT_TEST_BAD_DEFAULT", "lots", ""};
  ScopedEnv env(bad_default.name, nullptr);
  EXPECT_TRUE(throws_error([&] { (void)bad_default.as_int(); }, TPCOLL_INVALID_ARGUMENT,
                           {"TPCOLL_UNIT_TEST_BAD_DEFAULT"}));
}

TEST(EnvParam, AsBoolAcceptsTheDocumentedSpellings) {
  for (const char* yes : {"1", "true", "TRUE", "True", "yes", "YES", "on", "On"}) {
    ScopedEnv env(kBool.name, yes);
    EXPECT_TRUE(kBool.as_bool()) << yes;
  }
  for (const char* no : {"0", "false", "FALSE", "no", "No", "off", "OFF"}) {
    ScopedEnv env(kBool.name, no);
    EXPECT_FALSE(kBool.as_bool()) << no;
  }
  {
    ScopedEnv env(kBool.name, nullptr);
    EXPECT_FALSE(kBool.as_bool());
  }
  constexpr tpcoll::EnvParam default_on{"TPCOLL_UNIT_TEST_BOOL_ON", "1", ""};
  ScopedEnv env(default_on.name, "");
  EXPECT_TRUE(default_on.as_bool());
}

TEST(EnvParam, AsBoolRejectsOtherValuesNamingTheVariable) {
  for (const char* bad : {"2", "-1", "maybe", "tru", "y", "n", "enable", " 1"}) {
    ScopedEnv env(kBool.name, bad);
    EXPECT_TRUE(throws_error([] { (void)kBool.as_bool(); }, TPCOLL_INVALID_ARGUMENT, {"TPCOLL_UNIT_TEST_BOOL"}))
        << "value \"" << bad << "\"";
  }
}

TEST(EnvParam, ForcedAlgoParsesEveryName) {
  {
    ScopedEnv env("TPCOLL_ALGO", nullptr);
    EXPECT_EQ(tpcoll::env::forced_algo(), std::nullopt);
  }
  {
    ScopedEnv env("TPCOLL_ALGO", "");
    EXPECT_EQ(tpcoll::env::forced_algo(), std::nullopt);
  }
  {
    ScopedEnv env("TPCOLL_ALGO", "auto");
    EXPECT_EQ(tpcoll::env::forced_algo(), std::nullopt);
  }
  for (const auto& [text, algo] : std::initializer_list<std::pair<const char*, tpcoll_algo_t>>{
           {"oneshot", TPCOLL_ALGO_ONESHOT},
           {"twoshot", TPCOLL_ALGO_TWOSHOT},
           {"unfused", TPCOLL_ALGO_UNFUSED},
           {"fallback", TPCOLL_ALGO_FALLBACK}}) {
    ScopedEnv env("TPCOLL_ALGO", text);
    EXPECT_EQ(tpcoll::env::forced_algo(), std::optional(algo)) << text;
  }
}

TEST(EnvParam, ForcedAlgoRejectsUnknownNames) {
  for (const char* bad : {"ONESHOT", "one-shot", "ring", "1", "fallback "}) {
    ScopedEnv env("TPCOLL_ALGO", bad);
    EXPECT_TRUE(throws_error([] { (void)tpcoll::env::forced_algo(); }, TPCOLL_INVALID_ARGUMENT, {"TPCOLL_ALGO", bad}))
        << bad;
  }
}

TEST(EnvParam, EveryDeclaredParameterIsListedOnceWithAParsableDefault) {
  std::set<std::string> names;
  for (const tpcoll::EnvParam& p : tpcoll::env::all()) {
    EXPECT_TRUE(names.insert(p.name).second) << "listed twice: " << p.name;
    EXPECT_EQ(std::string(p.name).rfind("TPCOLL_", 0), 0u) << p.name;
    EXPECT_STRNE(p.help, "") << p.name;
  }
  for (const char* expected : {"TPCOLL_DISABLE", "TPCOLL_ALGO", "TPCOLL_DEBUG", "TPCOLL_TIMEOUT_MS",
                               "TPCOLL_BOOTSTRAP_TIMEOUT_MS", "TPCOLL_CPU_BUFFER_BYTES", "TPCOLL_RANK",
                               "TPCOLL_WORLD_SIZE", "TPCOLL_JOB"})
    EXPECT_EQ(names.count(expected), 1u) << expected;

  // The defaults themselves parse (checked with the variables unset).
  ScopedEnv a(tpcoll::env::kTimeoutMs.name, nullptr), b(tpcoll::env::kBootstrapTimeoutMs.name, nullptr),
      c(tpcoll::env::kCpuBufferBytes.name, nullptr), d(tpcoll::env::kRank.name, nullptr),
      e(tpcoll::env::kWorldSize.name, nullptr), f(tpcoll::env::kDisable.name, nullptr);
  EXPECT_EQ(tpcoll::env::kTimeoutMs.as_int(), 60000);
  EXPECT_EQ(tpcoll::env::kBootstrapTimeoutMs.as_int(), 120000);
  EXPECT_EQ(tpcoll::env::kCpuBufferBytes.as_int(), 1048576);
  EXPECT_EQ(tpcoll::env::kRank.as_int(), 0);
  EXPECT_EQ(tpcoll::env::kWorldSize.as_int(), 1);
  EXPECT_FALSE(tpcoll::env::kDisable.as_bool());
}

TEST(EnvParam, IpcOpenFaultsParseRankPeerPairs) {
  {
    ScopedEnv env("TPCOLL_FAULT_IPC_OPEN", nullptr);
    EXPECT_TRUE(tpcoll::env::ipc_open_faults().empty());
  }
  {
    ScopedEnv env("TPCOLL_FAULT_IPC_OPEN", "1:0,3:2");
    const std::vector<std::pair<int, int>> expected{{1, 0}, {3, 2}};
    EXPECT_EQ(tpcoll::env::ipc_open_faults(), expected);
  }
  for (const char* bad : {"1", "1:", ":0", "1-0", "1:0;2:3", "a:b", "-1:0", "1:0,"}) {
    ScopedEnv env("TPCOLL_FAULT_IPC_OPEN", bad);
    EXPECT_TRUE(throws_error([] { (void)tpcoll::env::ipc_open_faults(); }, TPCOLL_INVALID_ARGUMENT,
                             {"TPCOLL_FAULT_IPC_OPEN", "rank:peer"}))
        << bad;
  }
}

TEST(EnvParam, RealParametersNameThemselvesInErrors) {
  ScopedEnv env(tpcoll::env::kTimeoutMs.name, "soon");
  EXPECT_TRUE(throws_error([] { (void)tpcoll::env::kTimeoutMs.as_int(); }, TPCOLL_INVALID_ARGUMENT,
                           {"TPCOLL_TIMEOUT_MS", "soon"}));
}

}  // namespace
