// The launch panel: trains the selected plan with `moetune launch` (local CPU, mpirun or Slurm)
// as a child process, follows its run.jsonl for live loss and tokens/s, puts the prediction
// beside the measurement, and runs `moetune calibrate` on the measurements to refit the cluster.
#pragma once

#include <QProcess>
#include <QWidget>

#include <functional>
#include <optional>
#include <vector>

#include "core/run_log.hpp"

QT_BEGIN_NAMESPACE
class QComboBox;
class QGroupBox;
class QLabel;
class QLineEdit;
class QPlainTextEdit;
class QPushButton;
class QSpinBox;
class QTableWidget;
class QTimer;
QT_END_NAMESPACE

namespace moetune::gui {

class SeriesChart;

class LaunchPanel : public QWidget {
  Q_OBJECT

 public:
  explicit LaunchPanel(QWidget* parent = nullptr);
  ~LaunchPanel() override;

  // Where the panel gets the plan to run (the selected layout); nothing when none is selected.
  void setPlanSource(std::function<std::optional<Plan>()> source);
  void setRunDir(const QString& dir);
  QString runDir() const;
  void setSteps(int steps);
  void setLauncher(const QString& launcher);

  // Writes the plan to the run folder and returns the command that trains it, shell-quoted.
  QString writePlanAndCommand();
  bool running() const;
  const std::vector<StepRecord>& steps() const { return steps_; }
  QString statusText() const;
  SeriesChart* lossChart() const { return loss_chart_; }
  SeriesChart* rateChart() const { return rate_chart_; }
  QTableWidget* comparison() const { return comparison_; }

 public slots:
  void start();
  void stop();
  void calibrate();

 signals:
  void runStarted();
  void stepMeasured(qint64 step);
  void runFinished(int exit_code);
  // `moetune calibrate` wrote this cluster JSON.
  void calibrated(const QString& cluster_file);
  // Calibration could not run or failed; the reason is in statusText() too.
  void calibrationUnavailable(const QString& reason);

 private:
  QStringList launchArguments(const QString& plan_path) const;
  void setStatus(const QString& text);
  void readMetrics();
  void updateComparison();
  void appendLog(const QString& text);
  void runCalibrate();

  std::function<std::optional<Plan>()> plan_source_;
  QComboBox* launcher_;
  QLineEdit* hostfile_;
  QSpinBox* steps_spin_;
  QLineEdit* data_;
  QLineEdit* run_dir_;
  QPushButton* start_;
  QPushButton* stop_;
  QPushButton* calibrate_;
  QLabel* status_;
  QPlainTextEdit* log_;
  SeriesChart* loss_chart_;
  SeriesChart* rate_chart_;
  QTableWidget* comparison_;
  QGroupBox* compare_box_ = nullptr;
  QTimer* poll_;
  QProcess* process_ = nullptr;
  QProcess* calibrate_process_ = nullptr;

  std::optional<Plan> running_plan_;  // the plan of the current (or last) run, with prediction
  QString metrics_path_;
  qint64 metrics_offset_ = 0;
  QByteArray partial_line_;
  bool header_seen_ = false;
  std::vector<StepRecord> steps_;
};

}  // namespace moetune::gui
