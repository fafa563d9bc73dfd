// The inputs: model (preset or config.json), cluster (preset or JSON) and its size, the training
// settings and what the planner may search. readSetup() turns them into the library's types the
// way the CLI's flags do (same defaults), or throws with the reason.
#pragma once

#include <QWidget>

#include <optional>

#include "gui/session.hpp"

QT_BEGIN_NAMESPACE
class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QSpinBox;
QT_END_NAMESPACE

namespace moetune::gui {

class SetupPanel : public QWidget {
  Q_OBJECT

 public:
  explicit SetupPanel(QWidget* parent = nullptr);

  // Throws moetune::InputError (or another std::exception) for a bad model or cluster file.
  Setup readSetup() const;
  // Shows a plan's model, cluster and training settings; the model and cluster stay the plan's
  // own (they may be no preset) until another one is chosen.
  void showPlan(const Plan& plan);

  void setModelSource(const QString& spec);
  void setClusterSource(const QString& spec);
  QString modelSource() const;
  // The preset name or file the cluster comes from; empty when it is a loaded plan's cluster.
  QString clusterSource() const;
  void setNodes(int nodes);
  void setDevicesPerNode(int devices);  // 0: the preset's
  void setSequence(int seq_len, int global_batch);
  // The training settings' widgets by name ("aux_loss_coef", "z_loss_coef", "lr", "min_lr",
  // "weight_decay", "grad_clip"; "warmup_steps" and "decay_steps" are spin boxes), for tests.

 signals:
  // Any input changed (the window re-plans after a short pause).
  void edited();

 private:
  void browse(QComboBox* target, const QString& title);
  QComboBox* model_;
  QComboBox* cluster_;
  QSpinBox* nodes_;
  QSpinBox* devices_per_node_;
  QSpinBox* seq_;
  QSpinBox* global_batch_;
  QSpinBox* micro_batch_;
  QComboBox* precision_;
  QComboBox* recompute_;
  QComboBox* optimizer_offload_;
  QCheckBox* activation_offload_;
  QCheckBox* distributed_optimizer_;  // unchecked pins plain replicas
  QComboBox* load_balancing_;
  QDoubleSpinBox* capacity_factor_;
  QComboBox* dispatcher_;
  QComboBox* objective_;
  // Training settings (what `moetune train` takes as flags): router loss coefficients and AdamW.
  QDoubleSpinBox* aux_loss_coef_ = nullptr;  // below 0: the model's router_aux_loss_coef
  QDoubleSpinBox* z_loss_coef_ = nullptr;
  QDoubleSpinBox* lr_ = nullptr;
  QDoubleSpinBox* min_lr_ = nullptr;
  QSpinBox* warmup_steps_ = nullptr;
  QSpinBox* decay_steps_ = nullptr;
  QDoubleSpinBox* weight_decay_ = nullptr;
  QDoubleSpinBox* grad_clip_ = nullptr;
  // A loaded plan's own specs, shown under these labels.
  std::optional<ModelSpec> plan_model_;
  std::optional<ClusterSpec> plan_cluster_;
  std::optional<TrainSpec> plan_train_;
  QString plan_model_label_, plan_cluster_label_;
};

}  // namespace moetune::gui
