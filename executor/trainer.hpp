// The training loop on the CPU backend: data, micro-batches with gradient accumulation, global
// grad-norm clipping, AdamW with warmup + cosine, run.jsonl, checkpoints and exact resume.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

#include "core/plan.hpp"
#include "core/run_log.hpp"
#include "executor/batches.hpp"
#include "executor/dist_optimizer.hpp"
#include "executor/mixtral.hpp"
#include "executor/sharding.hpp"

namespace moetune::executor {

struct TrainOptions {
  std::int64_t steps = 100;
  std::filesystem::path data;            // token file; empty: the synthetic corpus, in memory
  std::filesystem::path checkpoint_dir;  // parent of step-NNNNNNNN folders; empty: none
  std::int64_t checkpoint_every = 0;     // 0: only after the last step
  int keep_checkpoints = 2;              // newest step folders kept (0 keeps all)
  bool resume = false;                   // continue from the newest checkpoint in checkpoint_dir
  std::filesystem::path metrics;         // run.jsonl; empty: none
  std::filesystem::path init_from;       // Hugging Face safetensors (file or folder) to start from
  std::filesystem::path export_hf;       // write config.json + model.safetensors here at the end
  // Supplies micro-batch `micro` of optimizer step `step` (from 0) instead of the token data:
  // ids[B*S] and targets[B*S] (kIgnoreIndex to skip a position).
  std::function<void(std::int64_t step, std::int64_t micro, std::int32_t* ids,
                     std::int32_t* targets)>
      batch_source;
};

// Refuses a plan the CPU executor cannot run, with the reason (pipeline stages, a world size other
// than the ranks running, GPU precision, forced routing, a model family other than Mixtral).
// `ranks` is the number of processes taking part.
void check_runnable_on_cpu(const Plan& plan, std::int64_t ranks = 1);

class Trainer {
 public:
  // `groups` holds this rank's communicators when several ranks train together (MPI); null for
  // one process.
  Trainer(const Plan& plan, const TrainOptions& options, ProcessGroups* groups = nullptr);
  ~Trainer();

  // Runs until options.steps optimizer steps are done (counting steps restored by resume).
  void run(const std::function<void(const StepRecord&)>& on_step = {});

  const Plan& plan() const { return plan_; }
  std::int64_t step() const { return step_; }
  // This rank's whole local parameters (hs = 1; with sharding use whole_params()).
  const std::vector<float>& params() const { return params_; }
  std::vector<float>& mutable_params() { return params_; }
  // This rank's whole local parameters under any layout; with hs > 1 a collective over the hs
  // group (every rank of it calls it) that gathers the shards.
  std::vector<float> whole_params();
  const ParameterLayout& layout() const { return model_->layout(); }
  std::int64_t grad_accum() const { return accum_; }
  // Bytes of this rank's model state, as the simulator's memory model counts it: parameters
  // (the fp32 master, which the CPU backend computes with), gradient accumulators, Adam m and v,
  // and with hs > 1 the two gather slots (gradients then include the two gradient slots).
  struct StateBytes {
    double parameters = 0, gradients = 0, optimizer = 0, gathered_parameters = 0;
  };
  StateBytes state_bytes() const;
  // One optimizer step on the given step's data; returns its record.
  StepRecord train_step();

 private:
  void load_data();
  void fill_micro_batch(std::int64_t step, std::int64_t micro);
  std::filesystem::path checkpoint_root() const;
  void save_checkpoint_now();
  // Resumes from the newest checkpoint under checkpoint_dir, written by this layout or any other
  // (then re-sharded from whole tensors). Returns false when there is none.
  bool resume();
  void restore(const std::filesystem::path& dir);
  void restore_resharded(const Plan& saved, std::int64_t step);

  void reduce_gradients();
  double global_grad_norm() const;
  // Hybrid sharding (hs > 1): parameters, gradients and Adam state of every unit (a layer's dense
  // part, its experts, the embedding, the head) are split into hs equal shards; each rank keeps
  // its shards (ShardedParameters gathers layer by layer and reduce-scatters gradients).
  void shard_parameters();
  void sharded_optimizer_step(double lr, double clip);
  // The distributed optimizer's step: AdamW on the owned chunks, then the all-gather.
  void distributed_optimizer_step(double lr, double clip);
  // The vectors the optimizer works on: the shards with hs > 1, else the whole local buffers.
  float* state_params() { return sharded_ ? sharded_->master().data() : params_.data(); }
  float* state_grads() { return sharded_ ? sharded_->grad_shard().data() : grads_.data(); }
  std::int64_t state_floats() const;
  // The distributed optimizer's Adam m and v as whole vectors, gathered from every replica's owned
  // chunks (a collective over the replicas).
  void gather_adam_state(std::vector<float>& m, std::vector<float>& v);
  void set_adam_state(std::vector<float> m, std::vector<float> v);

  Plan plan_;
  TrainOptions options_;
  ProcessGroups* groups_ = nullptr;
  std::int64_t dp_rank_ = 0, dp_size_ = 1;
  std::unique_ptr<MixtralModel> model_;
  std::int64_t accum_ = 1;
  std::int64_t step_ = 0;  // optimizer steps done
  std::vector<float> params_, grads_, adam_m_, adam_v_;
  std::int64_t hs_size_ = 1, hs_rank_ = 0;
  std::unique_ptr<ShardedParameters> sharded_;  // hs > 1; params_ and grads_ stay empty
  // The units of the state vector (hs shards, or whole units with hs = 1).
  std::vector<ShardUnit> units_;
  // With the distributed optimizer and replicas: adam_m_ and adam_v_ hold the owned chunks only.
  std::unique_ptr<DistributedOptimizer> dist_opt_;
  std::unique_ptr<TokenBatches> batches_;  // null with options_.batch_source
  std::vector<std::int32_t> ids_, targets_;
  std::unique_ptr<RunLogWriter> log_;
};

}  // namespace moetune::executor
