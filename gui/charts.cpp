// Qt Charts widgets: memory and step-time breakdowns, Pareto scatter, run series.
#include "gui/charts.hpp"

#include <QBarCategoryAxis>
#include <QBarSet>
#include <QChart>
#include <QChartView>
#include <QLineSeries>
#include <QLogValueAxis>
#include <QScatterSeries>
#include <QStackedBarSeries>
#include <QVBoxLayout>
#include <QValueAxis>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/units.hpp"

namespace moetune::gui {

namespace {

QChartView* make_view(QWidget* parent, QChart* chart) {
  auto* view = new QChartView(chart, parent);
  view->setRenderHint(QPainter::Antialiasing);
  auto* box = new QVBoxLayout(parent);
  box->setContentsMargins(0, 0, 0, 0);
  box->addWidget(view);
  return view;
}

QChart* make_chart(const QString& title) {
  auto* chart = new QChart;
  chart->setTitle(title);
  chart->setAnimationOptions(QChart::NoAnimation);
  chart->legend()->setAlignment(Qt::AlignRight);
  chart->setMargins(QMargins(4, 4, 4, 4));
  return chart;
}

void clear_chart(QChart* chart) {
  chart->removeAllSeries();
  for (QAbstractAxis* axis : chart->axes()) {
    chart->removeAxis(axis);
    delete axis;
  }
}

// Seconds shown in ms below one second.
std::pair<double, QString> time_unit(double seconds) {
  return seconds < 1.0 ? std::pair<double, QString>{1e3, QStringLiteral("ms")}
                       : std::pair<double, QString>{1.0, QStringLiteral("s")};
}

}  // namespace

MemoryChart::MemoryChart(QWidget* parent) : QWidget(parent), chart_(make_chart(tr("Memory"))) {
  make_view(this, chart_);
  setMinimumSize(260, 220);
}

void MemoryChart::clear() {
  clear_chart(chart_);
  segments_.clear();
  capacity_GiB_ = 0;
  chart_->setTitle(tr("Memory"));
}

void MemoryChart::showMemory(const MemoryBreakdown& m, double capacity_bytes) {
  clear();
  segments_ = {{tr("parameters"), m.parameters / kGiB},
               {tr("gradients"), m.gradients / kGiB},
               {tr("optimizer"), m.optimizer / kGiB},
               {tr("gathered params"), m.gathered_parameters / kGiB},
               {tr("activations"), m.activations / kGiB},
               {tr("comm buffers"), m.communication_buffers / kGiB},
               {tr("workspace"), m.workspace / kGiB},
               {tr("fragmentation"), m.fragmentation / kGiB}};
  capacity_GiB_ = capacity_bytes / kGiB;
  static const QColor colors[] = {
      QColor(31, 119, 180), QColor(174, 199, 232), QColor(255, 127, 14),  QColor(255, 187, 120),
      QColor(44, 160, 44),  QColor(214, 39, 40),   QColor(148, 103, 189), QColor(180, 180, 180)};
  auto* series = new QStackedBarSeries;
  double total = 0;
  for (std::size_t i = 0; i < segments_.size(); ++i) {
    auto* set = new QBarSet(segments_[i].first);
    *set << segments_[i].second;
    set->setColor(colors[i]);
    set->setBorderColor(colors[i].darker(130));
    series->append(set);
    total += segments_[i].second;
  }
  series->setBarWidth(0.45);
  chart_->addSeries(series);
  auto* categories = new QBarCategoryAxis;
  categories->append(tr("per device"));
  categories->setLabelsVisible(false);  // the title says it: one bar, the busiest device
  chart_->addAxis(categories, Qt::AlignBottom);
  series->attachAxis(categories);
  auto* values = new QValueAxis;
  values->setTitleText(tr("GiB"));
  values->setRange(0, std::max(total, capacity_GiB_) * 1.12);
  values->applyNiceNumbers();
  chart_->addAxis(values, Qt::AlignLeft);
  series->attachAxis(values);
  auto* capacity = new QLineSeries;
  capacity->setName(tr("capacity %1 GiB").arg(capacity_GiB_, 0, 'f', 0));
  capacity->append(-0.5, capacity_GiB_);
  capacity->append(0.5, capacity_GiB_);
  QPen pen(Qt::black);
  pen.setWidth(2);
  pen.setStyle(Qt::DashLine);
  capacity->setPen(pen);
  chart_->addSeries(capacity);
  capacity->attachAxis(categories);
  capacity->attachAxis(values);
  chart_->setTitle(tr("Memory per device: %1 of %2 GiB%3")
                       .arg(total, 0, 'f', 1)
                       .arg(capacity_GiB_, 0, 'f', 0)
                       .arg(total > capacity_GiB_ ? tr(" — does not fit") : QString()));
}

StepTimeChart::StepTimeChart(QWidget* parent)
    : QWidget(parent), chart_(make_chart(tr("Step time"))) {
  make_view(this, chart_);
  setMinimumSize(260, 220);
}

void StepTimeChart::clear() {
  clear_chart(chart_);
  segments_.clear();
  hidden_s_ = 0;
  chart_->setTitle(tr("Step time"));
}

void StepTimeChart::showTime(const TimeBreakdown& t) {
  clear();
  // Compute phases (blues and greens), exposed communication (reds and oranges), the pipeline.
  const struct {
    QString name;
    double seconds;
    QColor color;
  } parts[] = {{tr("attention"), t.attention, QColor(31, 119, 180)},
               {tr("router"), t.router, QColor(158, 218, 229)},
               {tr("experts"), t.experts, QColor(44, 160, 44)},
               {tr("lm_head"), t.lm_head, QColor(152, 223, 138)},
               {tr("recompute"), t.recompute, QColor(188, 189, 34)},
               {tr("optimizer"), t.optimizer, QColor(140, 86, 75)},
               {tr("dispatch (exposed)"), t.dispatch, QColor(214, 39, 40)},
               {tr("combine (exposed)"), t.combine, QColor(255, 152, 150)},
               {tr("all_gather (exposed)"), t.all_gather, QColor(255, 127, 14)},
               {tr("reduce_scatter (exposed)"), t.reduce_scatter, QColor(255, 187, 120)},
               {tr("all_reduce (exposed)"), t.all_reduce, QColor(227, 119, 194)},
               {tr("offload"), t.offload, QColor(148, 103, 189)},
               {tr("pipeline bubble"), t.pipeline, QColor(127, 127, 127)}};
  hidden_s_ = t.overlapped_comm;
  double parts_sum = 0;
  for (const auto& p : parts)
    parts_sum += std::max(0.0, p.seconds);
  const auto [scale, unit] = time_unit(std::max({t.step, hidden_s_, parts_sum}));
  auto* series = new QStackedBarSeries;
  for (const auto& p : parts) {
    if (p.seconds <= 0) continue;
    segments_.emplace_back(p.name, p.seconds);
    auto* set = new QBarSet(p.name);
    *set << p.seconds * scale << 0.0;
    set->setColor(p.color);
    set->setBorderColor(p.color.darker(130));
    series->append(set);
  }
  auto* hidden = new QBarSet(tr("hidden comm"));
  *hidden << 0.0 << hidden_s_ * scale;
  hidden->setColor(QColor(200, 200, 200));
  hidden->setBorderColor(QColor(120, 120, 120));
  series->append(hidden);
  series->setBarWidth(0.6);
  chart_->addSeries(series);
  auto* categories = new QBarCategoryAxis;
  categories->append({tr("step"), tr("hidden")});
  chart_->addAxis(categories, Qt::AlignBottom);
  series->attachAxis(categories);
  auto* values = new QValueAxis;
  values->setTitleText(unit);
  double drawn = 0;
  for (const auto& seg : segments_)
    drawn += seg.second;
  values->setRange(0, std::max({t.step, hidden_s_, drawn}) * scale * 1.08);
  values->applyNiceNumbers();
  chart_->addAxis(values, Qt::AlignLeft);
  series->attachAxis(values);
  const double sum = drawn;
  // The simulator's phases need not add up to its step exactly; say so rather than hide it.
  const int digits = scale > 1 ? 1 : 3;
  chart_->setTitle(std::abs(sum - t.step) > 0.005 * t.step
                       ? tr("Step time: %1 %2 (phases add up to %3 %2)")
                             .arg(t.step * scale, 0, 'f', digits)
                             .arg(unit)
                             .arg(sum * scale, 0, 'f', digits)
                       : tr("Step time: %1 %2").arg(t.step * scale, 0, 'f', digits).arg(unit));
}

ParetoChart::ParetoChart(QWidget* parent)
    : QWidget(parent),
      chart_(make_chart(tr("Throughput vs memory"))),
      fits_(new QScatterSeries),
      no_fit_(new QScatterSeries),
      front_(new QLineSeries),
      capacity_(new QLineSeries),
      selected_(new QScatterSeries),
      x_(new QLogValueAxis),
      y_(new QValueAxis) {
  make_view(this, chart_);
  fits_->setName(tr("fits"));
  fits_->setMarkerSize(7);
  fits_->setColor(QColor(31, 119, 180, 150));
  fits_->setBorderColor(Qt::transparent);
  no_fit_->setName(tr("does not fit"));
  no_fit_->setMarkerSize(6);
  no_fit_->setColor(QColor(214, 39, 40, 90));
  no_fit_->setBorderColor(Qt::transparent);
  front_->setName(tr("Pareto front"));
  QPen front_pen(QColor(44, 160, 44));
  front_pen.setWidth(3);
  front_->setPen(front_pen);
  capacity_->setName(tr("device capacity"));
  QPen cap_pen(Qt::black);
  cap_pen.setStyle(Qt::DashLine);
  cap_pen.setWidth(2);
  capacity_->setPen(cap_pen);
  selected_->setName(tr("selected"));
  selected_->setMarkerShape(QScatterSeries::MarkerShapeRectangle);
  selected_->setMarkerSize(14);
  selected_->setColor(QColor(255, 215, 0));
  selected_->setBorderColor(Qt::black);
  x_->setTitleText(tr("peak memory per device (GiB, log scale)"));
  x_->setBase(2);
  x_->setLabelFormat(QStringLiteral("%g"));
  y_->setLabelFormat(QStringLiteral("%.0f"));
  y_->setTitleText(tr("tokens/s"));
  chart_->addAxis(x_, Qt::AlignBottom);
  chart_->addAxis(y_, Qt::AlignLeft);
  for (QXYSeries* s :
       std::initializer_list<QXYSeries*>{no_fit_, fits_, front_, capacity_, selected_}) {
    chart_->addSeries(s);
    s->attachAxis(x_);
    s->attachAxis(y_);
  }
  for (QScatterSeries* s : {fits_, no_fit_}) {
    connect(s, &QScatterSeries::clicked, this, [this](const QPointF& p) { clickAt(p.x(), p.y()); });
  }
  setMinimumSize(300, 240);
}

void ParetoChart::setCandidates(const std::vector<planner::Candidate>& candidates,
                                double capacity_bytes) {
  plotted_.clear();
  // Thousands of markers make the scatter slow to draw; beyond kMaxPoints every k-th layout is
  // drawn (ranked order, so the best ones are kept) plus the whole Pareto front, and the title
  // says so.
  constexpr std::size_t kMaxPoints = 3000;
  const std::size_t stride =
      std::max<std::size_t>(1, (candidates.size() + kMaxPoints - 1) / kMaxPoints);
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (i % stride == 0 || candidates[i].pareto) plotted_.push_back(candidates[i]);
  }
  QList<QPointF> fit_points, other_points, front_points;
  double min_x = capacity_bytes / kGiB, max_x = capacity_bytes / kGiB, max_y = 0;
  for (const auto& c : plotted_) {
    const QPointF p(c.peak_memory_bytes / kGiB, c.tokens_per_s);
    (c.fits ? fit_points : other_points).append(p);
    if (c.pareto) front_points.append(p);
    min_x = std::min(min_x, p.x());
    max_x = std::max(max_x, p.x());
    max_y = std::max(max_y, p.y());
  }
  std::sort(front_points.begin(), front_points.end(),
            [](const QPointF& a, const QPointF& b) { return a.x() < b.x(); });
  fits_->replace(fit_points);
  no_fit_->replace(other_points);
  front_->replace(front_points);
  capacity_->replace(
      {QPointF(capacity_bytes / kGiB, 0), QPointF(capacity_bytes / kGiB, max_y * 1.05)});
  selected_->clear();
  min_x = std::max(min_x, 1e-3);
  x_->setRange(std::exp2(std::floor(std::log2(min_x))),
               std::exp2(std::ceil(std::log2(max_x * 1.05))));
  y_->setRange(0, std::max(1.0, max_y * 1.08));
  y_->applyNiceNumbers();
  x_log_span_ = std::max(1e-9, std::log2(x_->max() / x_->min()));
  y_span_ = std::max(1.0, y_->max() - y_->min());
  chart_->setTitle(stride > 1 ? tr("Throughput vs memory (every %1th of %2 layouts, and the whole "
                                   "Pareto front)")
                                    .arg(stride)
                                    .arg(candidates.size())
                              : tr("Throughput vs memory: %1 layouts").arg(candidates.size()));
}

void ParetoChart::setSelected(const Layout& layout) {
  selected_->clear();
  for (const auto& c : plotted_) {
    if (c.layout == layout) selected_->append(c.peak_memory_bytes / kGiB, c.tokens_per_s);
  }
}

void ParetoChart::clickAt(double memory_GiB, double tokens_per_s) {
  const planner::Candidate* best = nullptr;
  double best_d = std::numeric_limits<double>::infinity();
  for (const auto& c : plotted_) {
    const double dx =
        std::log2(std::max(c.peak_memory_bytes / kGiB, 1e-9) / std::max(memory_GiB, 1e-9)) /
        x_log_span_;
    const double dy = (c.tokens_per_s - tokens_per_s) / y_span_;
    const double d = dx * dx + dy * dy;
    if (d < best_d) {
      best_d = d;
      best = &c;
    }
  }
  if (best != nullptr) emit layoutClicked(best->layout);
}

SeriesChart::SeriesChart(const QString& title, const QString& y_title, QWidget* parent)
    : QWidget(parent),
      chart_(make_chart(title)),
      measured_(new QLineSeries),
      predicted_(new QLineSeries),
      x_(new QValueAxis),
      y_(new QValueAxis),
      predicted_value_(std::numeric_limits<double>::quiet_NaN()) {
  make_view(this, chart_);
  chart_->legend()->setAlignment(Qt::AlignBottom);
  measured_->setName(tr("measured"));
  measured_->setPointsVisible(true);
  predicted_->setName(tr("predicted"));
  QPen pen(QColor(214, 39, 40));
  pen.setStyle(Qt::DashLine);
  pen.setWidth(2);
  predicted_->setPen(pen);
  x_->setTitleText(tr("step"));
  x_->setLabelFormat(QStringLiteral("%d"));
  y_->setTitleText(y_title);
  chart_->addAxis(x_, Qt::AlignBottom);
  chart_->addAxis(y_, Qt::AlignLeft);
  for (QLineSeries* s : {measured_, predicted_}) {
    chart_->addSeries(s);
    s->attachAxis(x_);
    s->attachAxis(y_);
  }
  setMinimumSize(260, 200);
  rescale();
}

void SeriesChart::clear() {
  measured_->clear();
  predicted_->clear();
  predicted_value_ = std::numeric_limits<double>::quiet_NaN();
  rescale();
}

void SeriesChart::append(double x, double y) {
  measured_->append(x, y);
  rescale();
}

void SeriesChart::setPredicted(double y) {
  predicted_value_ = y;
  rescale();
}

int SeriesChart::pointCount() const {
  return static_cast<int>(measured_->count());
}

void SeriesChart::rescale() {
  double max_x = 1, min_y = std::numeric_limits<double>::infinity(), max_y = 0;
  for (const QPointF& p : measured_->points()) {
    max_x = std::max(max_x, p.x());
    min_y = std::min(min_y, p.y());
    max_y = std::max(max_y, p.y());
  }
  if (!std::isnan(predicted_value_)) {
    min_y = std::min(min_y, predicted_value_);
    max_y = std::max(max_y, predicted_value_);
    predicted_->replace({QPointF(0, predicted_value_), QPointF(max_x, predicted_value_)});
  } else {
    predicted_->clear();
  }
  if (!std::isfinite(min_y)) min_y = 0;
  const double pad = std::max(1e-9, (max_y - min_y) * 0.1);
  x_->setRange(0, max_x);
  y_->setRange(std::max(0.0, min_y - pad), max_y + pad);
  y_->applyNiceNumbers();
  x_->setTickCount(std::min<int>(11, static_cast<int>(max_x) + 1));
}

}  // namespace moetune::gui
