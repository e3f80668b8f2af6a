// A custom training loop written against the deepseek_train library's components instead of
// Trainer::run(): the Trainer only builds the model and its parallel layout and takes steps
// (train_step, evaluate); the data, the evaluation and early-stopping policy, the step metrics and
// rank 0's outputs (metrics.jsonl under custom_run/) are the components run() itself is made of,
// composed here into this program's own loop with its own output lines.
// Usage: custom_trainer [steps]
#include <deepseek_train/comm/local_communicator.h>
#include <deepseek_train/core/error.h>
#include <deepseek_train/data/byte_tokenizer.h>
#include <deepseek_train/data/distributed_sampler.h>
#include <deepseek_train/data/synthetic_corpus.h>
#include <deepseek_train/data/token_dataset.h>
#include <deepseek_train/train/run_outputs.h>
#include <deepseek_train/train/run_policy.h>
#include <deepseek_train/train/step_metrics.h>
#include <deepseek_train/train/trainer.h>
#include <deepseek_train/train/training_data.h>

#include <cstdio>
#include <cstdlib>

namespace {

dst::TrainConfig tiny_recipe(int64_t steps) {
  dst::TrainConfig config;  // a tiny byte-level model
  config.model.hidden_size = 64;
  config.model.intermediate_size = 128;
  config.model.num_hidden_layers = 2;
  config.model.num_attention_heads = 4;
  config.model.num_key_value_heads = 2;
  config.optim.lr = 3e-3;
  config.schedule.warmup_steps = 2;
  config.train.steps = steps;
  config.train.micro_batch_size = 8;
  config.train.eval_every = 4;
  config.train.early_stopping_patience = 3;
  config.train.output_dir = "custom_run";
  config.train.progress = "lines";
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int64_t steps = argc > 1 ? std::atoll(argv[1]) : 20;
    const dst::TrainConfig config = tiny_recipe(steps);
    const dst::comm::CommunicatorPtr world = dst::comm::make_local_communicator();
    const dst::Logger quiet(0, 1, dst::LogLevel::kWarn);
    dst::Trainer trainer(config, dst::ProcessGroups::create(world, config.parallel), quiet);

    dst::ByteTokenizer tokenizer;
    dst::TokenDataset train(dst::generate_synthetic_corpus(400, 7), tokenizer, 64, "synthetic");
    dst::TokenDataset validation(dst::generate_synthetic_corpus(40, 8), tokenizer, 64, "held out");
    dst::DistributedSampler sampler(train.size(), 7, /*dp_rank=*/0, /*dp_size=*/1,
                                    config.train.micro_batch_size, /*grad_accum=*/1);
    const auto eval_batches = dst::validation_batches(validation, 2, 8, 0, 1);

    dst::RunOutputs outputs(config.train, *world, /*resumed_step=*/-1, quiet);
    dst::StepMetricsRecorder recorder(world, steps, 0, config.model.num_parameters(),
                                      /*peak_flops=*/0.0);
    const double initial_eval = trainer.evaluate(eval_batches);
    outputs.write_eval(0, initial_eval);
    dst::EarlyStopping stopping(config.train, initial_eval);
    double loss = 0;
    for (int64_t step = 0; step < steps; ++step) {
      const dst::MicroBatch batch = dst::to_micro_batch(train.batch(sampler.next_step().front()));
      const dst::StepResult result = trainer.train_step({batch});
      dst::StepMetrics metrics = recorder.record(result, trainer.loss_scaler().skipped_steps());
      bool stop = false;
      if (dst::evaluation_due(config.train, result.step)) {
        metrics.eval_loss = trainer.evaluate(eval_batches);
        stop = stopping.observe(result.step, *metrics.eval_loss).stop;
      }
      outputs.write_step(metrics, recorder);
      loss = result.loss;
      std::printf("step %lld loss %.4f grad-norm %.3f lr %.2e\n",
                  static_cast<long long>(result.step), loss, result.grad_norm, result.lr);
      if (stop) break;
    }
    outputs.finish();
    std::printf("best eval loss %.4f at step %lld\n", stopping.best_loss(),
                static_cast<long long>(stopping.best_step()));
    std::printf("final loss %.4f\n", loss);
    return 0;
  } catch (const dst::Error& e) {
    std::fprintf(stderr, "custom_trainer: error: %s\n", e.what());
    return 1;
  }
}
