#include <torch/version.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>

#include "deepseek_train/core/atomic_file.h"
#include "deepseek_train/core/build_info.h"
#include "deepseek_train/core/device.h"
#include "deepseek_train/core/error.h"
#include "deepseek_train/core/launch_env.h"
#include "deepseek_train/core/log.h"
#include "deepseek_train/core/random.h"

using namespace dst;

namespace {
EnvLookup fake_env(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}
}  // namespace

TEST_CASE("DST_CHECK throws the requested type with file:line", "[core]") {
  try {
    DST_CHECK(1 + 1 == 3, ConfigError, "bad value " << 42);
    FAIL("no throw");
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    CHECK(what.find("bad value 42") == 0);
    CHECK(what.find("tests/core/test_core.cpp:") != std::string::npos);
    CHECK(what.find('\n') == std::string::npos);
  }
  CHECK_THROWS_AS([] { DST_THROW(CommError, "x"); }(), CommError);
  CHECK_THROWS_AS([] { DST_THROW(DataError, "x"); }(), Error);
  CHECK_THROWS_AS([] { DST_THROW(CheckpointError, "x"); }(), std::runtime_error);
  CHECK_NOTHROW([] { DST_CHECK(true, ConfigError, "never"); }());
}

TEST_CASE("build info: libtorch version, CUDA and NCCL versions when compiled in", "[core]") {
  const BuildInfo info = build_info();
  CHECK(info.libtorch == TORCH_VERSION);
  if (info.with_cuda) {
    CHECK_THAT(info.cuda, Catch::Matches("[0-9]+\\.[0-9]+"));
    CHECK_THAT(info.nccl, Catch::Matches("2\\.[0-9]+\\.[0-9]+"));
    CHECK(info.describe() ==
          "libtorch " + info.libtorch + ", CUDA " + info.cuda + ", NCCL " + info.nccl);
  } else {
    CHECK(info.cuda.empty());
    CHECK(info.describe() == "libtorch " + info.libtorch + ", CPU only");
  }
}

TEST_CASE("launch environment: none, OpenMPI, Slurm, PMIx, PMI", "[core]") {
  LaunchEnv none = detect_launch_env(fake_env({}));
  CHECK(none.launcher == "none");
  CHECK(none.rank == 0);
  CHECK(none.world_size == 1);

  LaunchEnv ompi = detect_launch_env(fake_env({{"OMPI_COMM_WORLD_RANK", "3"},
                                               {"OMPI_COMM_WORLD_SIZE", "8"},
                                               {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                               {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                                               {"SLURM_PROCID", "5"}}));
  CHECK(ompi.launcher == "openmpi");
  CHECK(ompi.rank == 3);
  CHECK(ompi.world_size == 8);
  CHECK(ompi.local_rank == 1);
  CHECK(ompi.local_size == 2);

  LaunchEnv slurm = detect_launch_env(fake_env({{"SLURM_PROCID", "5"},
                                                {"SLURM_NTASKS", "8"},
                                                {"SLURM_LOCALID", "1"},
                                                {"SLURM_NNODES", "2"},
                                                {"SLURM_STEP_ID", "0"}}));
  CHECK(slurm.launcher == "slurm");
  CHECK(slurm.rank == 5);
  CHECK(slurm.world_size == 8);
  CHECK(slurm.local_rank == 1);
  CHECK(slurm.local_size == 4);

  LaunchEnv pmix = detect_launch_env(fake_env({{"PMIX_RANK", "2"}, {"PMIX_SIZE", "4"}}));
  CHECK(pmix.launcher == "pmix");
  CHECK(pmix.rank == 2);

  LaunchEnv pmi = detect_launch_env(fake_env({{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}}));
  CHECK(pmi.launcher == "pmi");
  CHECK(pmi.world_size == 2);
}

TEST_CASE("launch environment: malformed values name the variable", "[core]") {
  CHECK_THROWS_WITH(detect_launch_env(fake_env({{"OMPI_COMM_WORLD_RANK", "x1"}})),
                    Catch::Contains("OMPI_COMM_WORLD_RANK"));
  CHECK_THROWS_WITH(detect_launch_env(fake_env(
                        {{"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "4"}, {"SLURM_STEP_ID", "0"}})),
                    Catch::Contains("SLURM_PROCID=4 is not below SLURM_NTASKS=4"));
}

TEST_CASE("launch environment: Slurm batch script vs srun step, per-node task lists", "[core]") {
  // A batch script (no step): one process, whatever SLURM_NTASKS says.
  LaunchEnv batch = detect_launch_env(fake_env({{"SLURM_PROCID", "0"},
                                                {"SLURM_NTASKS", "2"},
                                                {"SLURM_LOCALID", "0"},
                                                {"SLURM_JOB_ID", "7"}}));
  CHECK(batch.launcher == "none");
  CHECK(batch.world_size == 1);

  // `srun -n 1` inside a --ntasks-per-node=2 job: the step's list wins over the job's count.
  LaunchEnv small = detect_launch_env(fake_env({{"SLURM_PROCID", "0"},
                                                {"SLURM_NTASKS", "1"},
                                                {"SLURM_STEP_ID", "0"},
                                                {"SLURM_NTASKS_PER_NODE", "2"},
                                                {"SLURM_STEP_TASKS_PER_NODE", "1"}}));
  CHECK(small.launcher == "slurm");
  CHECK(small.local_size == 1);

  // Uneven nodes: "2(x3),1" is 2 tasks on nodes 0-2 and 1 on node 3.
  auto uneven = [](const char* node, const char* rank, const char* local) {
    return detect_launch_env(fake_env({{"SLURM_PROCID", rank},
                                       {"SLURM_NTASKS", "7"},
                                       {"SLURM_LOCALID", local},
                                       {"SLURM_NNODES", "4"},
                                       {"SLURM_NODEID", node},
                                       {"SLURM_STEPID", "3"},
                                       {"SLURM_STEP_TASKS_PER_NODE", "2(x3),1"}}));
  };
  CHECK(uneven("1", "3", "1").local_size == 2);
  CHECK(uneven("3", "6", "0").local_size == 1);
  // A malformed list falls back to SLURM_NTASKS / SLURM_NNODES.
  CHECK(detect_launch_env(fake_env({{"SLURM_PROCID", "0"},
                                    {"SLURM_NTASKS", "8"},
                                    {"SLURM_NNODES", "2"},
                                    {"SLURM_STEP_ID", "0"},
                                    {"SLURM_STEP_TASKS_PER_NODE", "4(y2)"}}))
            .local_size == 4);
}

TEST_CASE("intra-op threads: cores divided among local ranks, capped by affinity", "[core]") {
  CHECK(default_intra_op_threads(3, 2, 2, 2) == 3);
  CHECK(default_intra_op_threads(0, 2, 2, 2) == 1);
  CHECK(default_intra_op_threads(0, 2, 2, 1) == 2);
  CHECK(default_intra_op_threads(0, 1, 2, 1) == 1);
  CHECK(default_intra_op_threads(0, 16, 32, 2) == 16);
  CHECK(default_intra_op_threads(0, 2, 2, 4) == 1);
}

TEST_CASE("logger: rank 0 prints info, every rank prints warnings", "[core]") {
  Logger rank0(0, 4), rank1(1, 4), all(1, 4, LogLevel::kInfo, true);
  CHECK(rank0.enabled(LogLevel::kInfo));
  CHECK_FALSE(rank1.enabled(LogLevel::kInfo));
  CHECK(rank1.enabled(LogLevel::kWarn));
  CHECK(all.enabled(LogLevel::kInfo));
  CHECK_FALSE(rank0.enabled(LogLevel::kDebug));
  CHECK(parse_log_level("WARN") == LogLevel::kWarn);
  CHECK_THROWS_AS(parse_log_level("loud"), ConfigError);
}

TEST_CASE("atomic writes: replace whole, never leave a partial file or a temporary", "[core]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "dst_atomic_test";
  fs::remove_all(dir);
  const std::string path = (dir / "a" / "b.txt").string();
  write_file_atomically(path, "first");
  write_file_atomically(path, "second");
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(text == "second");
  CHECK_THROWS_AS(write_atomically(path,
                                   [](const std::string& temporary) {
                                     std::ofstream(temporary) << "half";
                                     throw DataError("writer failed");
                                   }),
                  DataError);
  std::ifstream again(path);
  std::string kept((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>());
  CHECK(kept == "second");
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir / "a")) files += entry.is_regular_file();
  CHECK(files == 1);
  CHECK_THROWS_AS(write_file_atomically((dir / "a" / "b.txt" / "c").string(), "x"), IoError);
  fs::remove_all(dir);
}

TEST_CASE("portable uniform integers", "[core]") {
  std::mt19937_64 a(5), b(5);
  for (int i = 0; i < 100; ++i) {
    const uint64_t x = uniform_below(a, 7);
    CHECK(x < 7);
    CHECK(x == uniform_below(b, 7));
  }
  CHECK(splitmix64(1) != splitmix64(2));
}

TEST_CASE("device: train.device resolved per local rank, GPUs shared only when too few", "[core]") {
  LaunchEnv env;
  env.local_rank = 3;
  env.local_size = 4;
  DeviceInventory none;
  none.cuda_built = true;
  DeviceInventory two = none;
  two.cuda_devices = 2;
  CHECK(resolve_device("cpu", env, two).is_cpu());
  CHECK(resolve_device("auto", env, none).is_cpu());
  const c10::Device auto_gpu = resolve_device("auto", env, two);
  CHECK(auto_gpu.is_cuda());
  CHECK(auto_gpu.index() == 1);  // local rank 3 of 4 on 2 GPUs
  CHECK(resolve_device("cuda", env, two).index() == 1);
  CHECK(device_bus_id(c10::Device(c10::kCPU)).empty());
  CHECK_THROWS_WITH(resolve_device("cuda", env, none),
                    Catch::Contains("train.device 'cuda': no CUDA device is visible"));
  none.cuda_visible_devices = "7";
  CHECK_THROWS_WITH(resolve_device("cuda", env, none), Catch::Contains("(CUDA_VISIBLE_DEVICES=7)"));
  DeviceInventory cpu_build;
  cpu_build.cuda_devices = 1;  // a GPU this build cannot use
  CHECK(resolve_device("auto", env, cpu_build).is_cpu());
  CHECK_THROWS_WITH(resolve_device("cuda", env, cpu_build),
                    Catch::Contains("this build has no CUDA"));
  CHECK_THROWS_AS(resolve_device("tpu", env, two), ConfigError);
  CHECK_THROWS_WITH(resolve_device("gpu", env, two, "--device"),
                    Catch::Contains("--device must be auto, cpu or cuda, got 'gpu'"));
  // This machine: what the probe sees agrees with libtorch.
  const DeviceInventory probed = probe_devices(process_env());
  CHECK(probed.cuda_devices >= 0);
  CHECK(device_memory(c10::Device(c10::kCPU)).peak_allocated_bytes == 0);
  CHECK(device_name(c10::Device(c10::kCPU)).empty());
}

TEST_CASE("device: dense bf16 peaks of known GPUs by name", "[core]") {
  CHECK(gpu_dense_bf16_peak_flops("NVIDIA H100 80GB HBM3") == 989e12);
  CHECK(gpu_dense_bf16_peak_flops("NVIDIA H200") == 989e12);
  CHECK(gpu_dense_bf16_peak_flops("NVIDIA H100 PCIe") == 756e12);
  CHECK(gpu_dense_bf16_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12);
  CHECK(gpu_dense_bf16_peak_flops("NVIDIA GH200 480GB") == 989e12);
  CHECK(gpu_dense_bf16_peak_flops("NVIDIA L4") == 121e12);
  CHECK_FALSE(gpu_dense_bf16_peak_flops("Some Future Accelerator").has_value());
}
