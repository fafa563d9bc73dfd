// The setup inputs.
#include "gui/setup_panel.hpp"

#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>

#include "core/error.hpp"
#include "core/presets.hpp"

namespace moetune::gui {

namespace {

QComboBox* preset_combo(QWidget* parent, const std::string& kind) {
  auto* combo = new QComboBox(parent);
  combo->setEditable(true);  // a preset name or a file path
  combo->setInsertPolicy(QComboBox::NoInsert);
  try {
    for (const std::string& name : preset_names(kind))
      combo->addItem(QString::fromStdString(name));
  } catch (const std::exception&) {
    // No profiles folder: paths still work.
  }
  return combo;
}

QComboBox* choice_combo(QWidget* parent, const QStringList& items) {
  auto* combo = new QComboBox(parent);
  combo->addItems(items);
  return combo;
}

QDoubleSpinBox* real_spin(QWidget* parent, const char* name, double min, double max, int decimals,
                          double step, double value) {
  auto* s = new QDoubleSpinBox(parent);
  s->setObjectName(QLatin1String(name));
  s->setRange(min, max);
  s->setDecimals(decimals);
  s->setSingleStep(step);
  s->setValue(value);
  s->setKeyboardTracking(false);
  return s;
}

QSpinBox* spin(QWidget* parent, int min, int max, int value) {
  auto* s = new QSpinBox(parent);
  s->setRange(min, max);
  s->setValue(value);
  s->setKeyboardTracking(false);
  return s;
}

}  // namespace

SetupPanel::SetupPanel(QWidget* parent)
    : QWidget(parent),
      model_(preset_combo(this, "models")),
      cluster_(preset_combo(this, "clusters")),
      nodes_(spin(this, 1, 100000, 2)),
      devices_per_node_(spin(this, 0, 4096, 0)),
      seq_(spin(this, 1, 1 << 22, 2048)),
      global_batch_(spin(this, 1, 1 << 24, 128)),
      micro_batch_(spin(this, 0, 1 << 20, 0)),
      precision_(choice_combo(this, {"auto", "fp32", "bf16", "fp8"})),
      recompute_(choice_combo(this, {"search", "none", "full"})),
      optimizer_offload_(choice_combo(this, {"search", "off", "on"})),
      activation_offload_(new QCheckBox(tr("offload activations"), this)),
      distributed_optimizer_(new QCheckBox(tr("distributed optimizer"), this)),
      load_balancing_(choice_combo(this, {"aux_loss", "sinkhorn", "none"})),
      capacity_factor_(new QDoubleSpinBox(this)),
      dispatcher_(choice_combo(this, {"alltoall", "allgather"})),
      objective_(choice_combo(this, {"throughput", "cost", "memory"})) {
  model_->setObjectName(QStringLiteral("model"));
  cluster_->setObjectName(QStringLiteral("cluster"));
  nodes_->setObjectName(QStringLiteral("nodes"));
  devices_per_node_->setSpecialValueText(tr("preset"));
  micro_batch_->setSpecialValueText(tr("search"));
  capacity_factor_->setRange(0, 64);
  capacity_factor_->setDecimals(2);
  capacity_factor_->setSingleStep(0.25);
  capacity_factor_->setSpecialValueText(tr("dropless"));
  capacity_factor_->setKeyboardTracking(false);
  setModelSource(QStringLiteral("mixtral-8x7b"));
  setClusterSource(QStringLiteral("p4d.24xlarge"));
  // Training settings, with the CLI's defaults (TrainSpec's; the aux-loss coefficient the model's).
  const TrainSpec defaults;
  const OptimizerSpec& opt = defaults.optimizer;
  aux_loss_coef_ = real_spin(this, "aux_loss_coef", -1, 10, 5, 0.001, -1);
  aux_loss_coef_->setSpecialValueText(tr("model's"));
  z_loss_coef_ = real_spin(this, "z_loss_coef", 0, 10, 6, 0.0001, defaults.moe.z_loss_coef);
  lr_ = real_spin(this, "lr", 0, 10, 8, 0.0001, opt.lr);
  min_lr_ = real_spin(this, "min_lr", 0, 10, 8, 0.00001, opt.min_lr);
  warmup_steps_ = spin(this, 0, 1 << 30, static_cast<int>(opt.warmup_steps));
  warmup_steps_->setObjectName(QStringLiteral("warmup_steps"));
  decay_steps_ = spin(this, 1, 1 << 30, static_cast<int>(opt.decay_steps));
  decay_steps_->setObjectName(QStringLiteral("decay_steps"));
  weight_decay_ = real_spin(this, "weight_decay", 0, 10, 5, 0.01, opt.weight_decay);
  grad_clip_ = real_spin(this, "grad_clip", 0, 1e6, 4, 0.1, opt.grad_clip);
  grad_clip_->setSpecialValueText(tr("off"));

  auto with_browse = [this](QComboBox* combo, const QString& title) {
    auto* row = new QWidget(this);
    auto* h = new QHBoxLayout(row);
    h->setContentsMargins(0, 0, 0, 0);
    h->addWidget(combo, 1);
    auto* button = new QPushButton(tr("…"), row);
    button->setToolTip(title);
    button->setFixedWidth(28);
    h->addWidget(button);
    connect(button, &QPushButton::clicked, this, [this, combo, title] { browse(combo, title); });
    return row;
  };
  auto* form = new QFormLayout(this);
  form->setContentsMargins(0, 0, 0, 0);
  form->addRow(tr("model"), with_browse(model_, tr("Open a model JSON or config.json")));
  form->addRow(tr("cluster"), with_browse(cluster_, tr("Open a cluster JSON")));
  form->addRow(tr("nodes"), nodes_);
  form->addRow(tr("devices per node"), devices_per_node_);
  form->addRow(tr("sequence length"), seq_);
  form->addRow(tr("global batch"), global_batch_);
  form->addRow(tr("micro-batch"), micro_batch_);
  form->addRow(tr("precision"), precision_);
  form->addRow(tr("recompute"), recompute_);
  form->addRow(tr("optimizer offload"), optimizer_offload_);
  form->addRow(QString(), activation_offload_);
  distributed_optimizer_->setChecked(true);
  distributed_optimizer_->setToolTip(
      tr("Split fp32 master weights and Adam state over the replicas (ZeRO-1, Megatron's "
         "--use-distributed-optimizer); unchecked, every replica keeps the whole optimizer"));
  form->addRow(QString(), distributed_optimizer_);
  form->addRow(tr("load balancing"), load_balancing_);
  form->addRow(tr("capacity factor"), capacity_factor_);
  form->addRow(tr("dispatcher"), dispatcher_);
  form->addRow(tr("rank by"), objective_);
  form->addRow(tr("aux-loss coef"), aux_loss_coef_);
  form->addRow(tr("z-loss coef"), z_loss_coef_);
  form->addRow(tr("learning rate"), lr_);
  form->addRow(tr("min learning rate"), min_lr_);
  form->addRow(tr("warmup steps"), warmup_steps_);
  form->addRow(tr("decay steps"), decay_steps_);
  form->addRow(tr("weight decay"), weight_decay_);
  form->addRow(tr("grad-norm clip"), grad_clip_);

  for (QComboBox* c : {model_, cluster_}) {
    connect(c->lineEdit(), &QLineEdit::editingFinished, this, &SetupPanel::edited);
    connect(c, &QComboBox::activated, this, &SetupPanel::edited);
  }
  for (QSpinBox* s : {nodes_, devices_per_node_, seq_, global_batch_, micro_batch_}) {
    connect(s, &QSpinBox::valueChanged, this, &SetupPanel::edited);
  }
  for (QDoubleSpinBox* d :
       {capacity_factor_, aux_loss_coef_, z_loss_coef_, lr_, min_lr_, weight_decay_, grad_clip_}) {
    connect(d, &QDoubleSpinBox::valueChanged, this, &SetupPanel::edited);
  }
  for (QSpinBox* s : {warmup_steps_, decay_steps_}) {
    connect(s, &QSpinBox::valueChanged, this, &SetupPanel::edited);
  }
  for (QComboBox* c :
       {precision_, recompute_, optimizer_offload_, load_balancing_, dispatcher_, objective_}) {
    connect(c, &QComboBox::currentIndexChanged, this, &SetupPanel::edited);
  }
  connect(activation_offload_, &QCheckBox::toggled, this, &SetupPanel::edited);
  connect(distributed_optimizer_, &QCheckBox::toggled, this, &SetupPanel::edited);
}

void SetupPanel::browse(QComboBox* target, const QString& title) {
  const QString file =
      QFileDialog::getOpenFileName(this, title, QString(), tr("JSON (*.json);;All files (*)"));
  if (file.isEmpty()) return;
  target->setEditText(file);
  emit edited();
}

void SetupPanel::setModelSource(const QString& spec) {
  model_->setEditText(spec);
}
void SetupPanel::setClusterSource(const QString& spec) {
  cluster_->setEditText(spec);
}
QString SetupPanel::modelSource() const {
  return model_->currentText().trimmed();
}

QString SetupPanel::clusterSource() const {
  const QString text = cluster_->currentText().trimmed();
  return plan_cluster_ && text == plan_cluster_label_ ? QString() : text;
}

void SetupPanel::setNodes(int nodes) {
  nodes_->setValue(nodes);
}
void SetupPanel::setDevicesPerNode(int devices) {
  devices_per_node_->setValue(devices);
}

void SetupPanel::setSequence(int seq_len, int global_batch) {
  seq_->setValue(seq_len);
  global_batch_->setValue(global_batch);
}

Setup SetupPanel::readSetup() const {
  Setup s;
  const QString model_text = model_->currentText().trimmed();
  const QString cluster_text = cluster_->currentText().trimmed();
  if (model_text.isEmpty()) throw InputError("choose a model preset or a config.json");
  if (cluster_text.isEmpty()) throw InputError("choose a cluster preset or a cluster JSON file");
  const bool plan_model = plan_model_ && model_text == plan_model_label_;
  const bool plan_cluster = plan_cluster_ && cluster_text == plan_cluster_label_;
  s.model = plan_model ? *plan_model_ : load_model(model_text.toStdString());
  const std::optional<std::int64_t> dpn =
      devices_per_node_->value() > 0 ? std::optional<std::int64_t>(devices_per_node_->value())
                                     : std::nullopt;
  if (plan_cluster) {
    s.cluster = *plan_cluster_;
    s.cluster.nodes = nodes_->value();
    if (dpn) s.cluster.devices_per_node = *dpn;
  } else {
    s.cluster = load_cluster(cluster_text.toStdString(), nodes_->value(), dpn);
  }
  // As the CLI: TrainSpec defaults, the model's aux-loss coefficient, bf16 on GPUs and fp32 on
  // CPUs unless chosen; a loaded plan keeps its own Adam betas, eps and seed. The coefficients and
  // the schedule come from the training settings (which show a loaded plan's own).
  s.train = plan_train_ && plan_model ? *plan_train_ : TrainSpec{};
  s.train.moe.aux_loss_coef =
      aux_loss_coef_->value() < 0 ? s.model.router_aux_loss_coef : aux_loss_coef_->value();
  s.train.moe.z_loss_coef = z_loss_coef_->value();
  OptimizerSpec& opt = s.train.optimizer;
  opt.lr = lr_->value();
  opt.min_lr = min_lr_->value();
  opt.warmup_steps = warmup_steps_->value();
  opt.decay_steps = decay_steps_->value();
  opt.weight_decay = weight_decay_->value();
  opt.grad_clip = grad_clip_->value();
  if (opt.min_lr > opt.lr) {
    throw InputError("the min learning rate (" + std::to_string(opt.min_lr) +
                     ") is above the learning rate (" + std::to_string(opt.lr) + ")");
  }
  s.train.seq_len = seq_->value();
  s.train.global_batch = global_batch_->value();
  const QString precision = precision_->currentText();
  s.train.precision =
      precision == QLatin1String("auto")
          ? (s.cluster.device.kind == DeviceKind::Cpu ? Precision::Fp32 : Precision::Bf16)
          : parse_precision(precision.toStdString());
  s.train.moe.load_balancing = parse_load_balancing(load_balancing_->currentText().toStdString());
  s.train.moe.capacity_factor = capacity_factor_->value();
  s.train.moe.dispatcher = parse_dispatcher(dispatcher_->currentText().toStdString());

  planner::Pins& pins = s.options.pins;
  if (micro_batch_->value() > 0) pins.micro_batch = micro_batch_->value();
  if (recompute_->currentIndex() > 0) {
    pins.recompute = parse_recompute(recompute_->currentText().toStdString());
  }
  if (optimizer_offload_->currentIndex() > 0) {
    pins.optimizer_offload = optimizer_offload_->currentText() == QLatin1String("on");
  }
  if (activation_offload_->isChecked()) pins.activation_offload = true;
  if (!distributed_optimizer_->isChecked()) pins.distributed_optimizer = false;
  s.options.objective = planner::parse_objective(objective_->currentText().toStdString());
  return s;
}

void SetupPanel::showPlan(const Plan& plan) {
  const QSignalBlocker blocks[] = {QSignalBlocker(model_),
                                   QSignalBlocker(cluster_),
                                   QSignalBlocker(nodes_),
                                   QSignalBlocker(devices_per_node_),
                                   QSignalBlocker(seq_),
                                   QSignalBlocker(global_batch_),
                                   QSignalBlocker(micro_batch_),
                                   QSignalBlocker(precision_),
                                   QSignalBlocker(recompute_),
                                   QSignalBlocker(optimizer_offload_),
                                   QSignalBlocker(activation_offload_),
                                   QSignalBlocker(distributed_optimizer_),
                                   QSignalBlocker(load_balancing_),
                                   QSignalBlocker(capacity_factor_),
                                   QSignalBlocker(dispatcher_),
                                   QSignalBlocker(aux_loss_coef_),
                                   QSignalBlocker(z_loss_coef_),
                                   QSignalBlocker(lr_),
                                   QSignalBlocker(min_lr_),
                                   QSignalBlocker(warmup_steps_),
                                   QSignalBlocker(decay_steps_),
                                   QSignalBlocker(weight_decay_),
                                   QSignalBlocker(grad_clip_)};
  plan_model_ = plan.model;
  plan_cluster_ = plan.cluster;
  plan_train_ = plan.train;
  plan_model_label_ = QString::fromStdString(plan.model.name) + tr(" (from plan)");
  plan_cluster_label_ = QString::fromStdString(plan.cluster.name) + tr(" (from plan)");
  model_->setEditText(plan_model_label_);
  cluster_->setEditText(plan_cluster_label_);
  nodes_->setValue(static_cast<int>(plan.cluster.nodes));
  devices_per_node_->setValue(static_cast<int>(plan.cluster.devices_per_node));
  seq_->setValue(static_cast<int>(plan.train.seq_len));
  global_batch_->setValue(static_cast<int>(plan.train.global_batch));
  micro_batch_->setValue(0);
  precision_->setCurrentText(QString::fromStdString(to_string(plan.train.precision)));
  recompute_->setCurrentIndex(0);
  optimizer_offload_->setCurrentIndex(0);
  activation_offload_->setChecked(plan.layout.activation_offload);
  distributed_optimizer_->setChecked(plan.layout.distributed_optimizer ||
                                     plan.layout.dense_replicas() == 1);
  load_balancing_->setCurrentText(QString::fromStdString(to_string(plan.train.moe.load_balancing)));
  capacity_factor_->setValue(plan.train.moe.capacity_factor);
  dispatcher_->setCurrentText(QString::fromStdString(to_string(plan.train.moe.dispatcher)));
  aux_loss_coef_->setValue(plan.train.moe.aux_loss_coef);
  z_loss_coef_->setValue(plan.train.moe.z_loss_coef);
  const OptimizerSpec& opt = plan.train.optimizer;
  lr_->setValue(opt.lr);
  min_lr_->setValue(opt.min_lr);
  warmup_steps_->setValue(static_cast<int>(opt.warmup_steps));
  decay_steps_->setValue(static_cast<int>(opt.decay_steps));
  weight_decay_->setValue(opt.weight_decay);
  grad_clip_->setValue(opt.grad_clip);
}

}  // namespace moetune::gui
