// The main window: setup on the left, the planner's layouts and charts in tabs in the middle, the
// selected layout's controls and prediction on the right, and the launch panel as a tab. It wires
// widgets to the PlannerSession and holds no planning logic of its own.
#pragma once

#include <QMainWindow>
#include <QMessageBox>
#include <QPointer>

#include "gui/session.hpp"

QT_BEGIN_NAMESPACE
class QCheckBox;
class QLabel;
class QLineEdit;
class QSortFilterProxyModel;
class QTabWidget;
class QTableView;
class QTimer;
QT_END_NAMESPACE

namespace moetune::gui {

class CandidateTableModel;
class HeatMap;
class LaunchPanel;
class LayoutControls;
class LayoutFilterProxy;
class MemoryChart;
class ParetoChart;
class PredictionSummary;
class RejectedTableModel;
class SetupPanel;
class StepTimeChart;
class TimelineView;

class MainWindow : public QMainWindow {
  Q_OBJECT

 public:
  explicit MainWindow(QWidget* parent = nullptr);

  // Reads the setup and starts a search; a bad input shows an error dialog.
  void replan();
  // Loads a plan.json: its setup is searched and its layout selected. False (and an error dialog)
  // when the file is bad.
  bool openPlan(const QString& file);
  bool savePlan(const QString& file);
  // Tabs by name, for --view: layouts, pareto, heatmap, timeline, rejected, launch.
  static QStringList viewNames();
  bool showView(const QString& name);

  PlannerSession* session() const { return session_; }
  SetupPanel* setupPanel() const { return setup_; }
  LayoutControls* controls() const { return controls_; }
  QTableView* table() const { return table_; }
  CandidateTableModel* candidateModel() const { return candidates_; }
  LayoutFilterProxy* candidateProxy() const { return proxy_; }
  RejectedTableModel* rejectedModel() const { return rejected_; }
  MemoryChart* memoryChart() const { return memory_chart_; }
  StepTimeChart* stepTimeChart() const { return time_chart_; }
  ParetoChart* paretoChart() const { return pareto_; }
  HeatMap* heatMap() const { return heat_map_; }
  TimelineView* timeline() const { return timeline_; }
  LaunchPanel* launchPanel() const { return launch_; }
  PredictionSummary* summary() const { return summary_; }
  // The error dialog shown last, while it is open.
  QMessageBox* errorDialog() const { return error_dialog_; }

 signals:
  void errorShown(const QString& message);

 private:
  void buildMenus();
  QWidget* buildLayoutsTab();
  void showError(const QString& title, const QString& message);
  void onSearchFinished();
  void onLayoutSelected(const Layout& layout);
  void onPredictionReady();
  void exportPlan(bool megatron);
  void copyLaunchCommand();

  PlannerSession* session_;
  SetupPanel* setup_;
  LayoutControls* controls_;
  PredictionSummary* summary_;
  QTabWidget* tabs_;
  QTableView* table_;
  CandidateTableModel* candidates_;
  LayoutFilterProxy* proxy_;
  QLineEdit* filter_words_;
  QCheckBox* fits_only_;
  QCheckBox* pareto_only_;
  RejectedTableModel* rejected_;
  QSortFilterProxyModel* rejected_proxy_;
  QLabel* rejected_caption_;
  MemoryChart* memory_chart_;
  StepTimeChart* time_chart_;
  ParetoChart* pareto_;
  HeatMap* heat_map_;
  TimelineView* timeline_;
  LaunchPanel* launch_;
  QTimer* replan_timer_;
  QPointer<QMessageBox> error_dialog_;
  bool selecting_row_ = false;
};

}  // namespace moetune::gui
