// The planner session: searches and predictions off the UI thread.
#include "gui/session.hpp"

#include <QElapsedTimer>
#include <QtConcurrent/QtConcurrentRun>

#include "simulator/simulator.hpp"

namespace moetune::gui {

namespace {

SearchOutcome run_search(const Setup& s) {
  SearchOutcome out;
  QElapsedTimer timer;
  timer.start();
  try {
    out.result = planner::search(s.model, s.cluster, s.train, s.options);
  } catch (const std::exception& e) {
    out.error = QString::fromStdString(e.what());
  }
  out.seconds = static_cast<double>(timer.nsecsElapsed()) * 1e-9;
  return out;
}

PredictionOutcome run_prediction(const Setup& s, const Layout& layout) {
  PredictionOutcome out;
  out.plan.layout = layout;  // names the request even when the prediction fails
  try {
    out.plan = planner::make_plan(s.model, s.cluster, s.train, layout);
    const simulator::Simulator sim(s.model, s.cluster, s.train);
    out.timeline = sim.timeline(layout);
  } catch (const std::exception& e) {
    out.error = QString::fromStdString(e.what());
  }
  return out;
}

}  // namespace

PlannerSession::PlannerSession(QObject* parent) : QObject(parent) {
  connect(&search_watcher_, &QFutureWatcher<SearchOutcome>::finished, this,
          &PlannerSession::onSearchDone);
  connect(&prediction_watcher_, &QFutureWatcher<PredictionOutcome>::finished, this,
          &PlannerSession::onPredictionDone);
}

PlannerSession::~PlannerSession() {
  search_watcher_.waitForFinished();
  prediction_watcher_.waitForFinished();
}

bool PlannerSession::busy() const {
  return search_running_ || prediction_running_ || search_pending_ || prediction_pending_;
}

void PlannerSession::setSetup(const Setup& setup, std::optional<Layout> preferred) {
  setup_ = setup;
  preferred_ = preferred;
  if (search_running_) {
    search_pending_ = true;  // started when the running one ends; its result is dropped
    return;
  }
  startSearch();
}

void PlannerSession::startSearch() {
  search_pending_ = false;
  search_running_ = true;
  emit searchStarted();
  search_watcher_.setFuture(QtConcurrent::run(run_search, *setup_));
}

void PlannerSession::onSearchDone() {
  search_running_ = false;
  if (search_pending_) {
    startSearch();
    return;
  }
  SearchOutcome outcome = search_watcher_.result();
  if (!outcome.error.isEmpty()) {
    search_ = {};
    layout_.reset();
    prediction_.reset();
    emit failed(outcome.error);
    emit searchFinished();
    if (!busy()) emit idle();
    return;
  }
  search_ = std::move(outcome);
  layout_.reset();
  prediction_.reset();
  emit searchFinished();
  const auto& ranked = search_.result.ranked;
  std::optional<Layout> pick;
  if (preferred_) {
    for (const auto& c : ranked) {
      if (c.layout == *preferred_) pick = c.layout;
    }
  }
  if (!pick && !ranked.empty()) pick = ranked.front().layout;
  preferred_.reset();
  if (pick) {
    selectLayout(*pick);
  } else if (!busy()) {
    emit idle();
  }
}

void PlannerSession::selectLayout(const Layout& layout) {
  if (!setup_) return;
  if (layout_ && *layout_ == layout && (prediction_ || prediction_running_)) return;
  layout_ = layout;
  emit layoutSelected(layout);
  if (prediction_running_) {
    prediction_pending_ = true;
    return;
  }
  startPrediction();
}

void PlannerSession::startPrediction() {
  prediction_pending_ = false;
  prediction_running_ = true;
  prediction_watcher_.setFuture(QtConcurrent::run(run_prediction, *setup_, *layout_));
}

void PlannerSession::onPredictionDone() {
  prediction_running_ = false;
  if (prediction_pending_ || search_running_) {
    if (prediction_pending_ && layout_) startPrediction();
    if (!busy()) emit idle();
    return;
  }
  PredictionOutcome outcome = prediction_watcher_.result();
  if (!layout_ || outcome.plan.layout != *layout_) {  // overtaken by another selection
    if (!busy()) emit idle();
    return;
  }
  if (!outcome.error.isEmpty()) {
    prediction_.reset();
    emit failed(outcome.error);
  } else {
    prediction_ = std::move(outcome);
    emit predictionReady();
  }
  if (!busy()) emit idle();
}

Plan PlannerSession::currentPlan() const {
  if (prediction_ && layout_ && prediction_->plan.layout == *layout_) return prediction_->plan;
  const Setup& s = *setup_;
  return planner::make_plan(s.model, s.cluster, s.train, *layout_);
}

}  // namespace moetune::gui
