// A custom training loop written against the deepseek_train library: it builds the model, the
// data pipeline, AdamW and the LR schedule itself and runs its own loop, instead of using the
// Trainer. Usage: custom_trainer [steps]
#include <deepseek_train/core/error.h>
#include <deepseek_train/data/byte_tokenizer.h>
#include <deepseek_train/data/distributed_sampler.h>
#include <deepseek_train/data/synthetic_corpus.h>
#include <deepseek_train/data/token_dataset.h>
#include <deepseek_train/model/llama.h>
#include <deepseek_train/optim/adamw.h>
#include <deepseek_train/optim/grad_clip.h>
#include <deepseek_train/optim/lr_schedule.h>
#include <deepseek_train/train/trainer.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  try {
    const int64_t steps = argc > 1 ? std::atoll(argv[1]) : 20;
    dst::ModelConfig config;  // a tiny byte-level model
    config.hidden_size = 64;
    config.intermediate_size = 128;
    config.num_hidden_layers = 2;
    config.num_attention_heads = 4;
    config.num_key_value_heads = 2;
    dst::LlamaModel model(config);
    model->initialize(/*seed=*/42);

    dst::ByteTokenizer tokenizer;
    dst::TokenDataset dataset(dst::generate_synthetic_corpus(400, 7), tokenizer, 64, "synthetic");
    dst::DistributedSampler sampler(dataset.size(), 7, /*dp_rank=*/0, /*dp_size=*/1,
                                    /*micro_batch_size=*/8, /*grad_accum=*/1);

    std::vector<dst::NamedParameter> parameters;
    for (const auto& item : model->named_parameters())
      parameters.push_back(
          {item.key(), item.value(), !dst::is_no_decay_parameter(item.key(), item.value())});
    dst::AdamWOptions adamw_options;
    adamw_options.lr = 3e-3;
    dst::AdamW optimizer(parameters, adamw_options);
    dst::ScheduleOptions schedule;
    schedule.warmup_steps = 2;

    double loss_value = 0;
    for (int64_t step = 0; step < steps; ++step) {
      dst::MicroBatch batch = dst::to_micro_batch(dataset.batch(sampler.next_step().front()));
      for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
      torch::Tensor loss = dst::cross_entropy_sum(model->forward(batch.input_ids), batch.labels) /
                           static_cast<double>(dst::count_target_tokens(batch.labels));
      loss.backward();
      std::vector<torch::Tensor> grads;
      for (auto& p : model->parameters()) grads.push_back(p.grad());
      const double norm = dst::clip_grad_norm(grads, 1.0);
      const double lr = dst::learning_rate_at(step, steps, adamw_options.lr, schedule);
      optimizer.step(lr);
      loss_value = loss.item<double>();
      std::printf("step %lld loss %.4f grad-norm %.3f lr %.2e\n", static_cast<long long>(step + 1),
                  loss_value, norm, lr);
    }
    std::printf("final loss %.4f\n", loss_value);
    return 0;
  } catch (const dst::Error& e) {
    std::fprintf(stderr, "custom_trainer: error: %s\n", e.what());
    return 1;
  }
}
