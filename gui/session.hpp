// PlannerSession: the state behind the window — the setup (model, cluster, training settings),
// the planner's search result and the selected layout with its prediction. Searches and
// predictions run on worker threads (QtConcurrent); results come back as signals on the UI
// thread, and a result that a newer request has overtaken is dropped.
#pragma once

#include <QFutureWatcher>
#include <QObject>

#include <memory>
#include <optional>
#include <vector>

#include "core/plan.hpp"
#include "planner/planner.hpp"
#include "simulator/step_builder.hpp"

namespace moetune::gui {

struct Setup {
  ModelSpec model;
  ClusterSpec cluster;
  TrainSpec train;
  planner::SearchOptions options;
};

struct SearchOutcome {
  planner::SearchResult result;
  double seconds = 0;
  QString error;  // set when the search threw
};

struct PredictionOutcome {
  Plan plan;  // with its prediction: the same library call as `moetune simulate`
  std::vector<simulator::TimelineOp> timeline;
  QString error;
};

class PlannerSession : public QObject {
  Q_OBJECT

 public:
  explicit PlannerSession(QObject* parent = nullptr);
  ~PlannerSession() override;

  // Starts a search for this setup. `preferred`: the layout to select once it is done (when the
  // planner finds it valid); otherwise the best-ranked layout is selected.
  void setSetup(const Setup& setup, std::optional<Layout> preferred = std::nullopt);
  // Selects a layout (one of the valid candidates) and starts its prediction.
  void selectLayout(const Layout& layout);

  bool hasSetup() const { return setup_.has_value(); }
  const Setup& setup() const { return *setup_; }
  const planner::SearchResult& result() const { return search_.result; }
  double searchSeconds() const { return search_.seconds; }
  bool hasLayout() const { return layout_.has_value(); }
  const Layout& layout() const { return *layout_; }
  // The selected layout's plan and prediction, once computed for the selected layout.
  const std::optional<PredictionOutcome>& prediction() const { return prediction_; }
  // A plan of the selected layout (with prediction) for saving, exporting and launching.
  Plan currentPlan() const;
  // True while a search or prediction is still running.
  bool busy() const;

 signals:
  void searchStarted();
  void searchFinished();
  void layoutSelected(const moetune::Layout& layout);
  void predictionReady();
  void failed(const QString& message);
  // Emitted whenever the session has nothing left running.
  void idle();

 private:
  void startSearch();
  void startPrediction();
  void onSearchDone();
  void onPredictionDone();

  std::optional<Setup> setup_;
  std::optional<Layout> preferred_;
  SearchOutcome search_;
  std::optional<Layout> layout_;
  std::optional<PredictionOutcome> prediction_;
  // In flight from start until its finished signal is handled. (A future may already be done
  // while its signal is still queued, so the watchers' isRunning() cannot say this.)
  bool search_running_ = false;
  bool prediction_running_ = false;
  bool search_pending_ = false;      // a newer setup arrived while a search ran
  bool prediction_pending_ = false;  // a newer layout arrived while a prediction ran
  QFutureWatcher<SearchOutcome> search_watcher_;
  QFutureWatcher<PredictionOutcome> prediction_watcher_;
};

}  // namespace moetune::gui
