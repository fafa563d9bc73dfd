// The simulator's per-layer timeline of one micro-batch on the first pipeline stage: one row per
// stream (compute, communication), one box per op, coloured by phase; backward ops hatched.
#pragma once

#include <QWidget>

#include <vector>

#include "simulator/step_builder.hpp"

namespace moetune::gui {

class TimelineView : public QWidget {
  Q_OBJECT

 public:
  explicit TimelineView(QWidget* parent = nullptr);
  void setOps(std::vector<simulator::TimelineOp> ops);
  int opCount() const { return static_cast<int>(ops_.size()); }

 protected:
  void paintEvent(QPaintEvent* event) override;

 private:
  std::vector<simulator::TimelineOp> ops_;
  std::vector<std::string> streams_;  // row order: compute first
  std::vector<std::string> phases_;   // legend order
  double end_s_ = 0;
};

}  // namespace moetune::gui
