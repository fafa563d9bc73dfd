// Direct controls for the selected layout (tp, pp, vpp, ep, hs, micro-batch, recompute,
// optimizer offload, mesh order) and the prediction summary. Each control offers only values
// some valid layout has; choosing one moves to the nearest valid layout with it, so the layout
// shown is always one the planner accepts.
#pragma once

#include <QWidget>

#include <map>

#include "gui/layout_choices.hpp"
#include "gui/session.hpp"

QT_BEGIN_NAMESPACE
class QComboBox;
class QLabel;
QT_END_NAMESPACE

namespace moetune::gui {

class LayoutControls : public QWidget {
  Q_OBJECT

 public:
  explicit LayoutControls(QWidget* parent = nullptr);
  // The valid layouts the controls choose among (the session's ranked candidates).
  void setCandidates(const std::vector<planner::Candidate>* valid);
  void setLayout(const Layout& layout);
  QComboBox* combo(LayoutField field) const { return combos_.at(field); }

 signals:
  void layoutRequested(const moetune::Layout& layout);

 private:
  void onChosen(LayoutField field);
  std::map<LayoutField, QComboBox*> combos_;
  const std::vector<planner::Candidate>* valid_ = nullptr;
  Layout current_;
  bool filling_ = false;
};

// The selected layout's figures as text: memory against capacity, step time, throughput, MFU,
// cost.
class PredictionSummary : public QWidget {
  Q_OBJECT

 public:
  explicit PredictionSummary(QWidget* parent = nullptr);
  void showPrediction(const Plan& plan);
  void showPending();
  void clear();
  void showMessage(const QString& text);
  QString text() const;

 private:
  QLabel* label_;
};

}  // namespace moetune::gui
