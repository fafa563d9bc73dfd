// The training loop, written once for every backend: data, micro-batches with gradient
// accumulation, global grad-norm clipping, AdamW with warmup + cosine, hybrid sharding and the
// distributed optimizer, run.jsonl, checkpoints and exact resume. The CPU backend trains fp32
// plans for a CPU cluster; the CUDA backend bf16 plans for a GPU cluster.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

#include "core/plan.hpp"
#include "core/run_log.hpp"
#include "executor/backend.hpp"
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

// Refuses a plan the executor cannot run on `backend` ("cpu" or "cuda"), with the reason:
// pipeline stages, a world size other than the ranks running, a precision or device the backend
// does not train, offloading, forced routing, a model family other than Mixtral. `ranks` is the
// number of ranks taking part.
void check_runnable(const Plan& plan, const std::string& backend, std::int64_t ranks = 1);

class Trainer {
 public:
  // `groups` holds this rank's communicators when several ranks train together (MPI, NCCL or
  // in-process threads); null for one rank. `backend` (may be null: a CPU backend of the
  // trainer's own) is what this rank computes with; the groups must move its memory.
  Trainer(const Plan& plan, const TrainOptions& options, ProcessGroups* groups = nullptr,
          Backend* backend = nullptr);
  ~Trainer();

  // Runs until options.steps optimizer steps are done (counting steps restored by resume).
  void run(const std::function<void(const StepRecord&)>& on_step = {});

  const Plan& plan() const { return plan_; }
  Backend& backend() { return *be_; }
  std::int64_t step() const { return step_; }
  // This rank's whole local fp32 parameters (hs = 1; with sharding use whole_params()).
  std::vector<float> params() const;
  // This rank's whole local parameters under any layout; with hs > 1 a collective over the hs
  // group (every rank of it calls it) that gathers the shards.
  std::vector<float> whole_params();
  const ParameterLayout& layout() const { return model_->layout(); }
  const MixtralModel& model() const { return *model_; }
  std::int64_t grad_accum() const { return accum_; }
  // Bytes of this rank's model state, as the simulator's memory model counts it: parameters
  // (the fp32 master, plus the working copy where the backend computes in another type),
  // gradient accumulators, Adam m and v, and with hs > 1 the two gather slots (gradients then
  // include the two gradient slots).
  struct StateBytes {
    double parameters = 0, gradients = 0, optimizer = 0, gathered_parameters = 0;
  };
  StateBytes state_bytes() const;
  // One optimizer step on the given step's data; returns its record.
  StepRecord train_step();

 private:
  void initialise();
  void load_data();
  void fill_micro_batch(std::int64_t step, std::int64_t micro);
  std::filesystem::path checkpoint_root() const;
  void save_checkpoint_now();
  // Resumes from the newest checkpoint under checkpoint_dir, written by this layout or any other
  // (then re-sharded from whole tensors). Returns false when there is none.
  bool resume();
  void restore(const std::filesystem::path& dir);
  void restore_resharded(const Plan& saved, std::int64_t step);
  void export_hf();

  void reduce_gradients();
  double global_grad_norm();
  void optimizer_step(double lr, double clip);
  // The state vector the optimizer works on (the hs shards, or the whole local parameters):
  // fp32 master, its working copy, and the gradients, in the backend's memory.
  float* state_params();
  void* state_working();
  float* state_grads();
  std::int64_t state_floats() const;
  // Host copies of the state vector (its master) and the whole-vector Adam state (gathered from
  // the owned chunks under the distributed optimizer: a collective over the replicas).
  std::vector<float> host_state_params();
  void host_adam_state(std::vector<float>& m, std::vector<float>& v);
  // Loads the state vector and whole-vector Adam state from the host.
  void set_state(const std::vector<float>& params, const std::vector<float>& m,
                 const std::vector<float>& v);

  Plan plan_;
  TrainOptions options_;
  ProcessGroups* groups_ = nullptr;
  std::unique_ptr<Backend> own_backend_;
  Backend* be_ = nullptr;
  std::int64_t dp_rank_ = 0, dp_size_ = 1;
  std::unique_ptr<MixtralModel> model_;
  std::int64_t accum_ = 1;
  std::int64_t step_ = 0;  // optimizer steps done
  // hs = 1: the whole local parameters (fp32 master, the working copy when the backend computes
  // in another type) and gradients. Adam m and v: the state vector's, or only the owned chunks
  // under the distributed optimizer.
  Buffer master_, working_, grads_, adam_m_, adam_v_;
  std::int64_t hs_size_ = 1, hs_rank_ = 0;
  std::unique_ptr<ShardedParameters> sharded_;  // hs > 1; master_ and grads_ stay empty
  // The units of the state vector (hs shards, or whole units with hs = 1).
  std::vector<ShardUnit> units_;
  std::unique_ptr<DistributedOptimizer> dist_opt_;
  // The gradient norm's segments of the state vector: 0 tp-whole dense, 1 tp-split dense,
  // 2 experts (they are summed over different groups).
  std::vector<SquareSegment> norm_segments_;
  std::unique_ptr<TokenBatches> batches_;  // null with options_.batch_source
  std::vector<std::int32_t> ids_, targets_;
  std::unique_ptr<RunLogWriter> log_;
};

}  // namespace moetune::executor
