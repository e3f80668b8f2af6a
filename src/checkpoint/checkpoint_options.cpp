#include "deepseek_train/checkpoint/checkpoint_options.h"

#include "deepseek_train/core/error.h"

namespace dst {

void CheckpointOptions::validate() const {
  DST_CHECK(every_steps >= 0, ConfigError,
            "checkpoint.every_steps must be >= 0 (0: only at the end), got " << every_steps);
  DST_CHECK(keep_last >= 0, ConfigError,
            "checkpoint.keep_last must be >= 0 (0: keep all), got " << keep_last);
  DST_CHECK(encryption.key_file.empty() || encryption.key_env.empty(), ConfigError,
            "checkpoint.encryption: set key_file or key_env, not both");
  DST_CHECK(!encrypt_exports || encryption.enabled(), ConfigError,
            "checkpoint.encrypt_exports needs checkpoint.encryption.key_file or key_env (the key "
            "the exports are sealed with)");
}

}  // namespace dst
