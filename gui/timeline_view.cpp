// Painting the per-layer timeline.
#include "gui/timeline_view.hpp"

#include <QPainter>

#include <algorithm>
#include <cmath>

namespace moetune::gui {

namespace {

QColor phase_color(const std::string& phase) {
  static const std::pair<const char*, QColor> known[] = {
      {"attention", QColor(31, 119, 180)},       {"router", QColor(158, 218, 229)},
      {"dispatch", QColor(214, 39, 40)},         {"experts", QColor(44, 160, 44)},
      {"combine", QColor(255, 152, 150)},        {"lm_head", QColor(152, 223, 138)},
      {"recompute", QColor(188, 189, 34)},       {"all_gather", QColor(255, 127, 14)},
      {"reduce_scatter", QColor(255, 187, 120)}, {"all_reduce", QColor(227, 119, 194)},
      {"optimizer", QColor(140, 86, 75)},        {"offload", QColor(148, 103, 189)}};
  for (const auto& [name, color] : known) {
    if (phase == name) return color;
  }
  return QColor::fromHsv(static_cast<int>(std::hash<std::string>{}(phase) % 360), 120, 200);
}

}  // namespace

TimelineView::TimelineView(QWidget* parent) : QWidget(parent) {
  setMinimumSize(400, 200);
}

void TimelineView::setOps(std::vector<simulator::TimelineOp> ops) {
  ops_ = std::move(ops);
  streams_.clear();
  phases_.clear();
  end_s_ = 0;
  for (const auto& op : ops_) {
    if (std::find(streams_.begin(), streams_.end(), op.stream) == streams_.end()) {
      streams_.push_back(op.stream);
    }
    if (std::find(phases_.begin(), phases_.end(), op.phase) == phases_.end()) {
      phases_.push_back(op.phase);
    }
    end_s_ = std::max(end_s_, op.end_s);
  }
  std::stable_partition(streams_.begin(), streams_.end(),
                        [](const std::string& s) { return s == "compute"; });
  update();
}

void TimelineView::paintEvent(QPaintEvent*) {
  QPainter p(this);
  p.fillRect(rect(), palette().base());
  QFont title_font = font();
  title_font.setBold(true);
  title_font.setPointSizeF(font().pointSizeF() * 1.15);
  p.setFont(title_font);
  p.drawText(QRectF(0, 8, width(), 24), Qt::AlignHCenter,
             tr("One micro-batch on pipeline stage 0, as the simulator schedules it"));
  p.setFont(font());
  if (ops_.empty() || end_s_ <= 0) {
    p.drawText(rect(), Qt::AlignCenter, tr("No layout selected"));
    return;
  }
  const double left = 110, right = width() - 20.0, top = 48;
  const double row_h =
      std::min(150.0, (height() - top - 130) / std::max<double>(1, streams_.size()));
  const double scale = (right - left) / end_s_;
  const bool in_ms = end_s_ < 1.0;
  for (std::size_t r = 0; r < streams_.size(); ++r) {
    const double y = top + row_h * static_cast<double>(r);
    p.setPen(palette().text().color());
    p.drawText(QRectF(0, y, left - 8, row_h), Qt::AlignRight | Qt::AlignVCenter,
               QString::fromStdString(streams_[r]));
    p.fillRect(QRectF(left, y + 2, right - left, row_h - 4), QColor(246, 246, 246));
  }
  for (const auto& op : ops_) {
    const auto row = static_cast<std::size_t>(
        std::find(streams_.begin(), streams_.end(), op.stream) - streams_.begin());
    const double y = top + row_h * static_cast<double>(row);
    const QRectF box(left + op.start_s * scale, y + 4,
                     std::max(1.0, (op.end_s - op.start_s) * scale), row_h - 8);
    const QColor color = phase_color(op.phase);
    p.fillRect(box, color);
    if (op.backward) p.fillRect(box, QBrush(QColor(255, 255, 255, 150), Qt::BDiagPattern));
    if (box.width() > 22 && op.layer >= 0) {
      p.setPen(color.lightness() < 120 ? Qt::white : Qt::black);
      p.drawText(box, Qt::AlignCenter, QString::number(op.layer));
    }
  }
  // Time axis.
  const double axis_y = top + row_h * static_cast<double>(streams_.size()) + 6;
  p.setPen(palette().text().color());
  p.drawLine(QPointF(left, axis_y), QPointF(right, axis_y));
  const double unit = in_ms ? 1e3 : 1.0;
  const double span = end_s_ * unit;
  const double raw_step = span / 10.0;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw_step)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (magnitude * m >= raw_step) {
      step = magnitude * m;
      break;
    }
  }
  for (double t = 0; t <= span + 1e-12; t += step) {
    const double x = left + t / unit * scale;
    p.drawLine(QPointF(x, axis_y), QPointF(x, axis_y + 4));
    p.drawText(QRectF(x - 40, axis_y + 5, 80, 16), Qt::AlignHCenter,
               QString::number(t, 'g', 4) + (in_ms ? QStringLiteral(" ms") : QStringLiteral(" s")));
  }
  // Legend.
  double x = left;
  double ly = axis_y + 30;
  for (const auto& phase : phases_) {
    const QString name = QString::fromStdString(phase);
    const double w = 30 + p.fontMetrics().horizontalAdvance(name);
    if (x + w > right) {
      x = left;
      ly += 22;
    }
    p.fillRect(QRectF(x, ly, 14, 14), phase_color(phase));
    p.drawText(QPointF(x + 18, ly + 12), name);
    x += w;
  }
  const QString note = tr("backward (hatched); numbers are layers");
  if (x + 40 + p.fontMetrics().horizontalAdvance(note) > right) {
    x = left;
    ly += 22;
  }
  const QRectF bwd(x + 10, ly, 14, 14);
  p.fillRect(bwd, QColor(120, 120, 120));
  p.fillRect(bwd, QBrush(QColor(255, 255, 255, 150), Qt::BDiagPattern));
  p.drawText(QPointF(bwd.right() + 4, ly + 12), note);
}

}  // namespace moetune::gui
