// Options of data-parallel gradient reduction (torch-free, filled by the recipe module).
#pragma once

namespace dst {

struct DataParallelOptions {
  // Gradients are reduced in buckets of about this many megabytes (MiB), each launched
  // asynchronously as soon as all its gradients are ready in backward.
  double bucket_mb = 25.0;
  // ZeRO stage on the dp axis; only 0 (plain data parallel) exists so far.
  int zero_stage = 0;
};

}  // namespace dst
