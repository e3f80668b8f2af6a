#include "pipeline_executor.h"

#include <torch/torch.h>

#include <chrono>
#include <map>
#include <utility>

#include "deepseek_train/core/error.h"

namespace dst {

namespace {

// What one (micro-batch, chunk) keeps between its forward and its backward.
struct Slot {
  torch::Tensor input;   // received activation (a leaf that collects its gradient)
  torch::Tensor output;  // activation sent on (not the last stage)
  torch::Tensor loss;    // summed token loss (last stage)
  torch::Tensor output_grad;
};

}  // namespace

PipelineExecutor::PipelineExecutor(std::shared_ptr<CausalLM> model,
                                   std::vector<DataParallelEngine*> engines,
                                   comm::CommunicatorPtr pp_group, ScheduleSpec spec,
                                   at::ScalarType activation_dtype)
    : model_(std::move(model)),
      engines_(std::move(engines)),
      pp_(std::move(pp_group)),
      spec_(spec),
      actions_(build_schedule(spec, pp_->rank())),
      activation_dtype_(activation_dtype) {
  DST_CHECK(static_cast<int>(engines_.size()) == model_->num_chunks(), InternalError,
            "one engine per model chunk");
  // MPI guarantees tags up to 32767.
  DST_CHECK(spec_.num_virtual_stages() * 2 * spec_.micro_batches < 32767, ConfigError,
            "pipeline: too many micro-batches (" << spec_.micro_batches << ") for "
                                                 << spec_.num_virtual_stages() << " stages");
}

int PipelineExecutor::tag(int sending_stage, bool gradient, int micro_batch) const {
  return (sending_stage * 2 + (gradient ? 1 : 0)) * spec_.micro_batches + micro_batch;
}

double PipelineExecutor::train_step(const std::vector<MicroBatch>& micro_batches, double loss_scale,
                                    double global_tokens) {
  DST_CHECK(static_cast<int>(micro_batches.size()) == spec_.micro_batches, ConfigError,
            "pipeline step: " << micro_batches.size() << " micro-batches, the schedule has "
                              << spec_.micro_batches);
  const int rank = pp_->rank();
  const int64_t hidden = model_->config().hidden_size;
  std::vector<int> backwards_left(engines_.size(), spec_.micro_batches);
  std::map<std::pair<int, int>, Slot> slots;
  std::vector<comm::WorkPtr> sends;
  std::vector<torch::Tensor> send_buffers;  // alive until their sends complete
  double loss_sum = 0.0;
  last_wait_seconds_ = 0.0;
  auto timed_wait = [this](const comm::WorkPtr& work) {
    const auto start = std::chrono::steady_clock::now();
    work->wait();
    last_wait_seconds_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };

  for (const Action& action : actions_) {
    const int mb = action.micro_batch, chunk = action.chunk;
    const int stage = virtual_stage_of(spec_, rank, chunk);
    const LayerChunk& layers = model_->chunks()[chunk];
    Slot& slot = slots[{mb, chunk}];
    const MicroBatch& batch = micro_batches[mb];
    switch (action.type) {
      case ActionType::kRecvActivation: {
        torch::Tensor buffer = torch::empty(
            {batch.input_ids.size(0), batch.input_ids.size(1), hidden},
            torch::TensorOptions().dtype(activation_dtype_).device(batch.input_ids.device()));
        timed_wait(pp_->recv(buffer, action.peer, tag(stage - 1, false, mb)));
        slot.input = buffer.requires_grad_(true);
        break;
      }
      case ActionType::kForward: {
        torch::Tensor out =
            model_->forward_chunk(chunk, layers.has_embedding ? batch.input_ids : slot.input);
        if (layers.has_head) {
          slot.loss = model_->loss_sum(out, batch.labels);
          loss_sum += slot.loss.item<double>();
        } else {
          slot.output = out;
        }
        break;
      }
      case ActionType::kSendActivation:
        send_buffers.push_back(slot.output.detach().contiguous());
        sends.push_back(pp_->send(send_buffers.back(), action.peer, tag(stage, false, mb)));
        break;
      case ActionType::kRecvGrad:
        slot.output_grad = torch::empty_like(slot.output);
        timed_wait(pp_->recv(slot.output_grad, action.peer, tag(stage + 1, true, mb)));
        break;
      case ActionType::kBackward: {
        DataParallelEngine& engine = *engines_[chunk];
        engine.set_sync(--backwards_left[chunk] == 0);
        if (layers.has_head) {
          (loss_scale == 1.0 ? slot.loss / global_tokens : slot.loss * (loss_scale / global_tokens))
              .backward();
        } else {
          slot.output.backward(slot.output_grad);
        }
        engine.finish_backward();
        slot.output = slot.loss = slot.output_grad = torch::Tensor();
        if (layers.has_embedding) slots.erase({mb, chunk});
        break;
      }
      case ActionType::kSendGrad:
        send_buffers.push_back(slot.input.grad().contiguous());
        sends.push_back(pp_->send(send_buffers.back(), action.peer, tag(stage, true, mb)));
        slots.erase({mb, chunk});
        break;
    }
  }
  comm::wait_all(sends);
  return loss_sum;
}

double PipelineExecutor::evaluate(const std::vector<MicroBatch>& batches) {
  torch::NoGradGuard no_grad;
  const int rank = pp_->rank();
  const int stages = spec_.num_virtual_stages();
  const int64_t hidden = model_->config().hidden_size;
  double loss_sum = 0.0;
  for (const MicroBatch& batch : batches) {
    torch::Tensor h;
    // Stage by stage in order on every rank: each stage's owner receives, computes and sends on.
    for (int stage = 0; stage < stages; ++stage) {
      if (rank_of_virtual_stage(spec_, stage) != rank) continue;
      const int chunk = stage / spec_.stages;
      if (stage > 0) {
        h = torch::empty(
            {batch.input_ids.size(0), batch.input_ids.size(1), hidden},
            torch::TensorOptions().dtype(activation_dtype_).device(batch.input_ids.device()));
        pp_->recv(h, rank_of_virtual_stage(spec_, stage - 1), /*tag=*/stage)->wait();
      }
      h = model_->forward_chunk(chunk, stage == 0 ? batch.input_ids : h).contiguous();
      if (stage == stages - 1) {
        loss_sum += model_->loss_sum(h, batch.labels).item<double>();
      } else {
        pp_->send(h, rank_of_virtual_stage(spec_, stage + 1), /*tag=*/stage + 1)->wait();
      }
    }
  }
  return loss_sum;
}

}  // namespace dst
