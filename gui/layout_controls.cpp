// Layout controls and the prediction summary.
#include "gui/layout_controls.hpp"

#include <QComboBox>
#include <QFormLayout>
#include <QLabel>
#include <QVBoxLayout>

#include "core/constraints.hpp"
#include "core/units.hpp"

namespace moetune::gui {

namespace {

const char* field_label(LayoutField f) {
  switch (f) {
    case LayoutField::Tp:
      return "tensor parallel (tp)";
    case LayoutField::Pp:
      return "pipeline stages (pp)";
    case LayoutField::Vpp:
      return "virtual stages (vpp)";
    case LayoutField::Ep:
      return "expert parallel (ep)";
    case LayoutField::Hs:
      return "hybrid shard (hs)";
    case LayoutField::MicroBatch:
      return "micro-batch";
    case LayoutField::Recompute:
      return "recompute";
    case LayoutField::OptimizerOffload:
      return "optimizer offload";
    case LayoutField::Order:
      return "mesh order";
  }
  return "";
}

}  // namespace

LayoutControls::LayoutControls(QWidget* parent) : QWidget(parent) {
  auto* form = new QFormLayout(this);
  form->setContentsMargins(0, 0, 0, 0);
  for (LayoutField f : kLayoutFields) {
    auto* combo = new QComboBox(this);
    combo->setEditable(false);  // only the offered values can be chosen
    combo->setObjectName(QStringLiteral("layout_") + QString::number(static_cast<int>(f)));
    combo->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
    combo->setEnabled(false);
    combos_[f] = combo;
    form->addRow(tr(field_label(f)), combo);
    connect(combo, &QComboBox::currentIndexChanged, this, [this, f] { onChosen(f); });
  }
}

void LayoutControls::setCandidates(const std::vector<planner::Candidate>* valid) {
  valid_ = valid;
  if (valid_ == nullptr || valid_->empty()) {
    filling_ = true;
    for (auto& [f, combo] : combos_) {
      combo->clear();
      combo->setEnabled(false);
    }
    filling_ = false;
  }
}

void LayoutControls::setLayout(const Layout& layout) {
  current_ = layout;
  if (valid_ == nullptr) return;
  filling_ = true;
  for (auto& [f, combo] : combos_) {
    combo->clear();
    for (const std::string& v : field_choices(*valid_, f, layout))
      combo->addItem(QString::fromStdString(v));
    combo->setCurrentIndex(combo->findText(QString::fromStdString(field_value(layout, f))));
    combo->setEnabled(combo->count() > 1);
  }
  filling_ = false;
}

void LayoutControls::onChosen(LayoutField field) {
  if (filling_ || valid_ == nullptr) return;
  QComboBox* combo = combos_.at(field);
  if (combo->currentIndex() < 0) return;
  const std::string value = combo->currentText().toStdString();
  if (value == field_value(current_, field)) return;
  if (auto next = nearest_layout(*valid_, current_, field, value)) {
    setLayout(*next);
    emit layoutRequested(*next);
  } else {
    setLayout(current_);  // cannot happen: every offered value has a valid layout
  }
}

PredictionSummary::PredictionSummary(QWidget* parent) : QWidget(parent), label_(new QLabel(this)) {
  auto* box = new QVBoxLayout(this);
  box->setContentsMargins(0, 0, 0, 0);
  label_->setObjectName(QStringLiteral("predictionSummary"));
  label_->setTextFormat(Qt::RichText);
  label_->setWordWrap(true);
  label_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  box->addWidget(label_);
  clear();
}

void PredictionSummary::clear() {
  label_->setText(tr("<i>No layout selected.</i>"));
}

void PredictionSummary::showMessage(const QString& text) {
  label_->setText(QStringLiteral("<i>%1</i>").arg(text.toHtmlEscaped()));
}

void PredictionSummary::showPending() {
  label_->setText(label_->text() + tr("<br><i>updating…</i>"));
}

QString PredictionSummary::text() const {
  return label_->text();
}

void PredictionSummary::showPrediction(const Plan& plan) {
  const Prediction& p = *plan.prediction;
  const QString fits = p.fits ? tr("<b style='color:#1a7f37'>fits</b>")
                              : tr("<b style='color:#b42318'>does not fit</b>: %1")
                                    .arg(QString::fromStdString(p.reason).toHtmlEscaped());
  QString rows;
  auto row = [&rows](const QString& name, const QString& value) {
    rows += QStringLiteral("<tr><td>%1</td><td align='right'><b>%2</b></td></tr>").arg(name, value);
  };
  row(tr("peak memory"), tr("%1 / %2 GiB")
                             .arg(p.peak_memory_bytes / kGiB, 0, 'f', 1)
                             .arg(p.device_memory_bytes / kGiB, 0, 'f', 0));
  if (p.host_memory_bytes_per_node > 0) {
    row(tr("host memory / node"), tr("%1 GiB").arg(p.host_memory_bytes_per_node / kGiB, 0, 'f', 1));
  }
  row(tr("step time"), p.step_time_s >= 1 ? tr("%1 s").arg(p.step_time_s, 0, 'f', 3)
                                          : tr("%1 ms").arg(p.step_time_s * 1e3, 0, 'f', 2));
  row(tr("tokens/s"), QString::number(p.tokens_per_s, 'f', 0));
  row(tr("tokens/s per device"), QString::number(p.tokens_per_s_per_device, 'f', 0));
  row(tr("TFLOPS per device"), QString::number(p.tflops_per_device, 'f', 1));
  row(tr("MFU"), QStringLiteral("%1 %").arg(100.0 * p.mfu, 0, 'f', 1));
  row(tr("cost per step"), QStringLiteral("$%1").arg(p.cost_per_step_usd, 0, 'f', 4));
  row(tr("$ per billion tokens"),
      QStringLiteral("$%1").arg(p.cost_per_billion_tokens_usd, 0, 'f', 0));
  row(tr("grad accumulation"), QString::number(grad_accum_steps(plan.train, plan.layout)));
  label_->setText(
      QStringLiteral("<p>%1<br><code>%2</code></p><table width='100%'>%3</table>")
          .arg(fits, QString::fromStdString(describe(plan.layout)).toHtmlEscaped(), rows));
}

}  // namespace moetune::gui
