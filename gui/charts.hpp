// Every Qt Charts use of the GUI sits behind these small widgets (Qt Charts is deprecated
// upstream from 6.10; replacing it touches only charts.cpp): the memory and step-time breakdowns
// of the selected layout, the throughput-vs-memory scatter with the Pareto front, and line charts
// for a run's measurements.
#pragma once

#include <QString>
#include <QWidget>

#include <utility>
#include <vector>

#include "core/prediction.hpp"
#include "planner/planner.hpp"

QT_BEGIN_NAMESPACE
class QChart;
class QChartView;
class QLineSeries;
class QLogValueAxis;
class QScatterSeries;
class QValueAxis;
QT_END_NAMESPACE

namespace moetune::gui {

// Stacked bar of the busiest device's memory, with the device capacity as a line.
class MemoryChart : public QWidget {
  Q_OBJECT

 public:
  explicit MemoryChart(QWidget* parent = nullptr);
  void showMemory(const MemoryBreakdown& memory, double capacity_bytes);
  void clear();
  // What is drawn, for checks: (name, GiB) per segment in MemoryBreakdown order, and the capacity.
  const std::vector<std::pair<QString, double>>& segments() const { return segments_; }
  double capacityGiB() const { return capacity_GiB_; }

 private:
  QChart* chart_;
  std::vector<std::pair<QString, double>> segments_;
  double capacity_GiB_ = 0;
};

// Stacked bar of the step: compute per phase, exposed communication, pipeline bubble; a second
// bar shows the communication hidden behind compute.
class StepTimeChart : public QWidget {
  Q_OBJECT

 public:
  explicit StepTimeChart(QWidget* parent = nullptr);
  void showTime(const TimeBreakdown& time);
  void clear();
  // (name, seconds) per segment drawn in the step bar, and the hidden communication.
  const std::vector<std::pair<QString, double>>& segments() const { return segments_; }
  double hiddenSeconds() const { return hidden_s_; }

 private:
  QChart* chart_;
  std::vector<std::pair<QString, double>> segments_;
  double hidden_s_ = 0;
};

// Tokens/s against peak memory for every valid layout; the Pareto front as a line; the device
// capacity as a vertical line; the selected layout highlighted. Clicking a point selects it.
class ParetoChart : public QWidget {
  Q_OBJECT

 public:
  explicit ParetoChart(QWidget* parent = nullptr);
  void setCandidates(const std::vector<planner::Candidate>& candidates, double capacity_bytes);
  void setSelected(const Layout& layout);
  int plottedCount() const { return static_cast<int>(plotted_.size()); }
  // Selects the plotted layout nearest to this point (GiB, tokens/s), as a click does.
  void clickAt(double memory_GiB, double tokens_per_s);

 signals:
  void layoutClicked(const moetune::Layout& layout);

 private:
  QChart* chart_;
  QScatterSeries* fits_;
  QScatterSeries* no_fit_;
  QLineSeries* front_;
  QLineSeries* capacity_;
  QScatterSeries* selected_;
  QLogValueAxis* x_;  // memory spans decades: a log scale keeps the fitting ones readable
  QValueAxis* y_;
  std::vector<planner::Candidate> plotted_;
  double x_log_span_ = 1, y_span_ = 1;
};

// A measured series against steps, with an optional predicted value as a dashed line.
class SeriesChart : public QWidget {
  Q_OBJECT

 public:
  SeriesChart(const QString& title, const QString& y_title, QWidget* parent = nullptr);
  void clear();
  void append(double x, double y);
  void setPredicted(double y);  // NaN: none
  int pointCount() const;

 private:
  void rescale();
  QChart* chart_;
  QLineSeries* measured_;
  QLineSeries* predicted_;
  QValueAxis* x_;
  QValueAxis* y_;
  double predicted_value_;
};

}  // namespace moetune::gui
