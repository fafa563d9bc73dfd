// The main window: widgets wired to the planner session.
#include "gui/main_window.hpp"

#include <QAction>
#include <QApplication>
#include <QCheckBox>
#include <QClipboard>
#include <QDialog>
#include <QDialogButtonBox>
#include <QFileDialog>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QItemSelectionModel>
#include <QLabel>
#include <QLineEdit>
#include <QMenuBar>
#include <QMessageBox>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QScrollArea>
#include <QSortFilterProxyModel>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QTableView>
#include <QTimer>
#include <QVBoxLayout>

#include "core/error.hpp"
#include "core/json_reader.hpp"
#include "gui/charts.hpp"
#include "gui/heat_map.hpp"
#include "gui/launch_panel.hpp"
#include "gui/layout_controls.hpp"
#include "gui/layout_table_model.hpp"
#include "gui/setup_panel.hpp"
#include "gui/timeline_view.hpp"
#include "planner/export.hpp"

namespace moetune::gui {

namespace {

const char* const kViews[] = {"layouts", "pareto", "heatmap", "timeline", "rejected", "launch"};

QTableView* make_table(QWidget* parent, QAbstractItemModel* model) {
  auto* table = new QTableView(parent);
  table->setModel(model);
  table->setSortingEnabled(true);
  table->setSelectionBehavior(QAbstractItemView::SelectRows);
  table->setSelectionMode(QAbstractItemView::SingleSelection);
  table->setAlternatingRowColors(true);
  table->verticalHeader()->hide();
  table->verticalHeader()->setDefaultSectionSize(22);
  table->horizontalHeader()->setHighlightSections(false);
  return table;
}

}  // namespace

MainWindow::MainWindow(QWidget* parent)
    : QMainWindow(parent),
      session_(new PlannerSession(this)),
      setup_(new SetupPanel(this)),
      controls_(new LayoutControls(this)),
      summary_(new PredictionSummary(this)),
      tabs_(new QTabWidget(this)),
      table_(nullptr),
      candidates_(new CandidateTableModel(this)),
      proxy_(new LayoutFilterProxy(this)),
      filter_words_(new QLineEdit(this)),
      fits_only_(new QCheckBox(tr("fits only"), this)),
      pareto_only_(new QCheckBox(tr("Pareto front only"), this)),
      rejected_(new RejectedTableModel(this)),
      rejected_proxy_(new QSortFilterProxyModel(this)),
      rejected_caption_(new QLabel(this)),
      memory_chart_(new MemoryChart(this)),
      time_chart_(new StepTimeChart(this)),
      pareto_(new ParetoChart(this)),
      heat_map_(new HeatMap(this)),
      timeline_(new TimelineView(this)),
      launch_(new LaunchPanel(this)),
      replan_timer_(new QTimer(this)) {
  setWindowTitle(tr("moetune-gui"));
  proxy_->setSourceModel(candidates_);
  rejected_proxy_->setSourceModel(rejected_);
  rejected_proxy_->setSortRole(kSortRole);

  // Left: the setup. Right: the selected layout. Middle: tabs.
  auto* setup_box = new QGroupBox(tr("Model, cluster and training"), this);
  auto* setup_layout = new QVBoxLayout(setup_box);
  setup_layout->addWidget(setup_);
  auto* plan_button = new QPushButton(tr("Plan"), setup_box);
  plan_button->setToolTip(tr("Search every layout again (also happens on every change)"));
  setup_layout->addWidget(plan_button);
  setup_layout->addStretch(1);
  connect(plan_button, &QPushButton::clicked, this, &MainWindow::replan);

  auto* layout_box = new QGroupBox(tr("Selected layout"), this);
  auto* layout_layout = new QVBoxLayout(layout_box);
  layout_layout->addWidget(controls_);
  auto* prediction_box = new QGroupBox(tr("Prediction"), this);
  auto* prediction_layout = new QVBoxLayout(prediction_box);
  prediction_layout->addWidget(summary_);
  auto* right = new QWidget(this);
  auto* right_layout = new QVBoxLayout(right);
  right_layout->setContentsMargins(0, 0, 0, 0);
  right_layout->addWidget(layout_box);
  right_layout->addWidget(prediction_box);
  right_layout->addStretch(1);
  right->setFixedWidth(290);
  setup_box->setFixedWidth(300);

  tabs_->addTab(buildLayoutsTab(), tr("Layouts"));
  tabs_->addTab(pareto_, tr("Throughput vs memory"));
  tabs_->addTab(heat_map_, tr("ep × hs heat map"));
  tabs_->addTab(timeline_, tr("Timeline"));
  auto* rejected_page = new QWidget(this);
  auto* rejected_layout = new QVBoxLayout(rejected_page);
  rejected_caption_->setWordWrap(true);
  rejected_layout->addWidget(rejected_caption_);
  auto* rejected_table = make_table(rejected_page, rejected_proxy_);
  for (int c = 0; c < RejectedTableModel::Rule; ++c)
    rejected_table->setColumnWidth(c, 44);
  rejected_table->setColumnWidth(RejectedTableModel::Rule, 140);
  rejected_table->sortByColumn(RejectedTableModel::Rule, Qt::AscendingOrder);
  rejected_table->horizontalHeader()->setStretchLastSection(true);
  rejected_layout->addWidget(rejected_table);
  tabs_->addTab(rejected_page, tr("Rejected"));
  tabs_->addTab(launch_, tr("Launch"));

  auto* central = new QWidget(this);
  auto* h = new QHBoxLayout(central);
  h->addWidget(setup_box);
  h->addWidget(tabs_, 1);
  h->addWidget(right);
  setCentralWidget(central);
  buildMenus();

  replan_timer_->setSingleShot(true);
  replan_timer_->setInterval(300);
  connect(replan_timer_, &QTimer::timeout, this, &MainWindow::replan);
  connect(setup_, &SetupPanel::edited, replan_timer_, qOverload<>(&QTimer::start));

  connect(session_, &PlannerSession::searchStarted, this,
          [this] { statusBar()->showMessage(tr("Planning…")); });
  connect(session_, &PlannerSession::searchFinished, this, &MainWindow::onSearchFinished);
  connect(session_, &PlannerSession::layoutSelected, this, &MainWindow::onLayoutSelected);
  connect(session_, &PlannerSession::predictionReady, this, &MainWindow::onPredictionReady);
  connect(session_, &PlannerSession::failed, this,
          [this](const QString& m) { showError(tr("Planning failed"), m); });

  connect(controls_, &LayoutControls::layoutRequested, session_, &PlannerSession::selectLayout);
  connect(pareto_, &ParetoChart::layoutClicked, session_, &PlannerSession::selectLayout);
  connect(heat_map_, &HeatMap::layoutClicked, session_, &PlannerSession::selectLayout);
  connect(table_->selectionModel(), &QItemSelectionModel::currentRowChanged, this,
          [this](const QModelIndex& current) {
            if (selecting_row_ || !current.isValid()) return;
            const QModelIndex source = proxy_->mapToSource(current);
            session_->selectLayout(candidates_->candidate(source.row()).layout);
          });

  launch_->setPlanSource([this]() -> std::optional<Plan> {
    if (!session_->hasSetup() || !session_->hasLayout()) return std::nullopt;
    return session_->currentPlan();
  });
  connect(launch_, &LaunchPanel::calibrated, this, [this](const QString& file) {
    setup_->setClusterSource(file);
    replan();  // re-rank with the refitted cluster
  });
  connect(launch_, &LaunchPanel::calibrationUnavailable, this,
          [this](const QString& why) { statusBar()->showMessage(why); });
}

QWidget* MainWindow::buildLayoutsTab() {
  auto* page = new QWidget(this);
  auto* v = new QVBoxLayout(page);
  auto* bar = new QHBoxLayout;
  filter_words_->setPlaceholderText(tr("filter: words of the layout, e.g. \"ep4 hs8\", \"full\""));
  filter_words_->setClearButtonEnabled(true);
  bar->addWidget(new QLabel(tr("Filter"), page));
  bar->addWidget(filter_words_, 1);
  bar->addWidget(fits_only_);
  bar->addWidget(pareto_only_);
  v->addLayout(bar);
  connect(filter_words_, &QLineEdit::textChanged, proxy_, &LayoutFilterProxy::setWords);
  connect(fits_only_, &QCheckBox::toggled, proxy_, &LayoutFilterProxy::setFitsOnly);
  connect(pareto_only_, &QCheckBox::toggled, proxy_, &LayoutFilterProxy::setParetoOnly);

  table_ = make_table(page, proxy_);
  table_->setObjectName(QStringLiteral("layoutTable"));
  table_->sortByColumn(CandidateTableModel::Rank, Qt::AscendingOrder);
  // Fixed starting widths: sizing to contents would measure every one of thousands of rows.
  static const std::pair<int, int> widths[] = {
      {CandidateTableModel::Rank, 44},      {CandidateTableModel::Tp, 34},
      {CandidateTableModel::Pp, 40},        {CandidateTableModel::Ep, 34},
      {CandidateTableModel::Hs, 38},        {CandidateTableModel::Rep, 38},
      {CandidateTableModel::Order, 118},    {CandidateTableModel::MicroBatch, 36},
      {CandidateTableModel::Recompute, 66}, {CandidateTableModel::Offload, 54},
      {CandidateTableModel::Fits, 36},      {CandidateTableModel::PeakMemory, 64},
      {CandidateTableModel::StepTime, 62},  {CandidateTableModel::TokensPerS, 70},
      {CandidateTableModel::Mfu, 52},       {CandidateTableModel::CostPerBtok, 58},
      {CandidateTableModel::Pareto, 48}};
  for (const auto& [column, width] : widths)
    table_->setColumnWidth(column, width);
  table_->horizontalHeader()->setStretchLastSection(true);
  auto* charts = new QSplitter(Qt::Horizontal, page);
  charts->addWidget(memory_chart_);
  charts->addWidget(time_chart_);
  charts->setStretchFactor(0, 2);
  charts->setStretchFactor(1, 3);
  auto* split = new QSplitter(Qt::Vertical, page);
  split->addWidget(table_);
  split->addWidget(charts);
  split->setStretchFactor(0, 1);
  split->setStretchFactor(1, 1);
  split->setSizes({420, 420});
  v->addWidget(split, 1);
  return page;
}

void MainWindow::buildMenus() {
  QMenu* file = menuBar()->addMenu(tr("&File"));
  QAction* open = file->addAction(tr("&Open plan…"));
  open->setShortcut(QKeySequence::Open);
  connect(open, &QAction::triggered, this, [this] {
    const QString f = QFileDialog::getOpenFileName(this, tr("Open plan"), QString(),
                                                   tr("Plans (*.json);;All files (*)"));
    if (!f.isEmpty()) openPlan(f);
  });
  QAction* save = file->addAction(tr("&Save plan…"));
  save->setShortcut(QKeySequence::Save);
  connect(save, &QAction::triggered, this, [this] {
    const QString f =
        QFileDialog::getSaveFileName(this, tr("Save plan"), tr("plan.json"), tr("Plans (*.json)"));
    if (!f.isEmpty()) savePlan(f);
  });
  file->addSeparator();
  connect(file->addAction(tr("Export &Megatron-LM arguments…")), &QAction::triggered, this,
          [this] { exportPlan(true); });
  connect(file->addAction(tr("Export SMP v2 &JSON…")), &QAction::triggered, this,
          [this] { exportPlan(false); });
  connect(file->addAction(tr("&Copy launch command")), &QAction::triggered, this,
          &MainWindow::copyLaunchCommand);
  file->addSeparator();
  QAction* plan = file->addAction(tr("&Plan again"));
  plan->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_R));
  connect(plan, &QAction::triggered, this, &MainWindow::replan);
  QAction* quit = file->addAction(tr("&Quit"));
  quit->setShortcut(QKeySequence::Quit);
  connect(quit, &QAction::triggered, this, &QWidget::close);
}

void MainWindow::showError(const QString& title, const QString& message) {
  statusBar()->showMessage(message);
  if (error_dialog_) error_dialog_->close();
  // Not modal for the application: the window keeps running (and tests can look at it).
  auto* box = new QMessageBox(QMessageBox::Critical, title, message, QMessageBox::Ok, this);
  box->setAttribute(Qt::WA_DeleteOnClose);
  box->setObjectName(QStringLiteral("errorDialog"));
  error_dialog_ = box;
  box->open();
  emit errorShown(message);
}

void MainWindow::replan() {
  replan_timer_->stop();
  Setup s;
  try {
    s = setup_->readSetup();
  } catch (const std::exception& e) {
    showError(tr("Cannot plan"), QString::fromUtf8(e.what()));
    return;
  }
  s.options.keep_rejected = true;
  setWindowTitle(tr("moetune-gui — %1 on %2 × %3")
                     .arg(QString::fromStdString(s.model.name))
                     .arg(s.cluster.nodes)
                     .arg(QString::fromStdString(s.cluster.name)));
  std::optional<Layout> keep;
  if (session_->hasLayout()) keep = session_->layout();
  session_->setSetup(s, keep);
}

bool MainWindow::openPlan(const QString& file) {
  Plan plan;
  try {
    plan = read_plan_file(file.toStdString());
  } catch (const std::exception& e) {
    showError(tr("Cannot open the plan"), QString::fromUtf8(e.what()));
    return false;
  }
  setup_->showPlan(plan);
  Setup s;
  try {
    s = setup_->readSetup();
  } catch (const std::exception& e) {
    showError(tr("Cannot open the plan"), QString::fromUtf8(e.what()));
    return false;
  }
  s.options.keep_rejected = true;
  setWindowTitle(tr("moetune-gui — %1").arg(file));
  session_->setSetup(s, plan.layout);
  return true;
}

bool MainWindow::savePlan(const QString& file) {
  if (!session_->hasLayout()) {
    showError(tr("Nothing to save"), tr("Select a layout first."));
    return false;
  }
  try {
    write_plan_file(file.toStdString(), session_->currentPlan());
  } catch (const std::exception& e) {
    showError(tr("Cannot save the plan"), QString::fromUtf8(e.what()));
    return false;
  }
  statusBar()->showMessage(tr("Wrote %1").arg(file));
  return true;
}

QStringList MainWindow::viewNames() {
  QStringList names;
  for (const char* v : kViews)
    names << QString::fromLatin1(v);
  return names;
}

bool MainWindow::showView(const QString& name) {
  const int index = static_cast<int>(viewNames().indexOf(name));
  if (index < 0) return false;
  tabs_->setCurrentIndex(index);
  return true;
}

void MainWindow::onSearchFinished() {
  if (!session_->hasSetup()) return;
  const planner::SearchResult& r = session_->result();
  candidates_->setCandidates(r.ranked);
  rejected_->setRejected(session_->setup(), r.rejected);
  controls_->setCandidates(&session_->result().ranked);
  pareto_->setCandidates(r.ranked, session_->setup().cluster.device.memory_bytes());
  rejected_caption_->setText(
      tr("%1 layouts break a rule (each stands for every mesh order, recompute and offload "
         "choice of its degrees). Sort by rule or read the reason.")
          .arg(r.rejected.size()));
  if (r.ranked.empty()) {
    summary_->showMessage(tr("No layout passes the rules: the Rejected tab says why for each."));
    memory_chart_->clear();
    time_chart_->clear();
    timeline_->setOps({});
    heat_map_->setGrid({});
  }
  statusBar()->showMessage(
      tr("%1 layouts considered: %2 broke a rule, %3 simulated, %4 fit — searched in %5 s")
          .arg(r.considered)
          .arg(r.considered - r.simulated)
          .arg(r.simulated)
          .arg(r.fitting)
          .arg(session_->searchSeconds(), 0, 'f', 2));
}

void MainWindow::onLayoutSelected(const Layout& layout) {
  controls_->setLayout(layout);
  const int row = find_candidate(candidates_->candidates(), layout);
  if (row >= 0) {
    const QModelIndex index = proxy_->mapFromSource(candidates_->index(row, 0));
    selecting_row_ = true;
    if (index.isValid()) {
      table_->selectionModel()->setCurrentIndex(
          index, QItemSelectionModel::ClearAndSelect | QItemSelectionModel::Rows);
      table_->scrollTo(index);
    } else {
      table_->selectionModel()->clearSelection();
    }
    selecting_row_ = false;
  }
  pareto_->setSelected(layout);
  heat_map_->setGrid(make_heat_grid(session_->result().ranked, layout));
  heat_map_->setSelected(layout.ep, layout.hs);
  summary_->showPending();
}

void MainWindow::onPredictionReady() {
  const auto& outcome = *session_->prediction();
  const Prediction& p = *outcome.plan.prediction;
  summary_->showPrediction(outcome.plan);
  memory_chart_->showMemory(p.memory, p.device_memory_bytes);
  time_chart_->showTime(p.time);
  timeline_->setOps(outcome.timeline);
}

void MainWindow::exportPlan(bool megatron) {
  if (!session_->hasLayout()) {
    showError(tr("Nothing to export"), tr("Select a layout first."));
    return;
  }
  planner::Export e;
  try {
    const Plan plan = session_->currentPlan();
    e = megatron ? planner::export_megatron(plan) : planner::export_smp(plan);
  } catch (const std::exception& ex) {
    showError(tr("Cannot export"), QString::fromUtf8(ex.what()));
    return;
  }
  auto* dialog = new QDialog(this);
  dialog->setAttribute(Qt::WA_DeleteOnClose);
  dialog->setWindowTitle(megatron ? tr("Megatron-LM arguments") : tr("SMP v2 configuration"));
  auto* v = new QVBoxLayout(dialog);
  auto* text = new QPlainTextEdit(QString::fromStdString(e.text), dialog);
  text->setReadOnly(true);
  text->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
  v->addWidget(text);
  for (const auto& note : e.notes) {
    auto* label = new QLabel(tr("Note: %1").arg(QString::fromStdString(note)), dialog);
    label->setWordWrap(true);
    v->addWidget(label);
  }
  auto* buttons = new QDialogButtonBox(QDialogButtonBox::Save | QDialogButtonBox::Close, dialog);
  auto* copy = buttons->addButton(tr("Copy"), QDialogButtonBox::ActionRole);
  connect(copy, &QPushButton::clicked, dialog,
          [t = e.text] { QGuiApplication::clipboard()->setText(QString::fromStdString(t)); });
  connect(buttons, &QDialogButtonBox::rejected, dialog, &QDialog::close);
  connect(buttons, &QDialogButtonBox::accepted, dialog, [this, dialog, t = e.text, megatron] {
    const QString f = QFileDialog::getSaveFileName(
        dialog, tr("Save export"), megatron ? tr("megatron-args.txt") : tr("smp-config.json"));
    if (f.isEmpty()) return;
    try {
      write_file_atomically(f.toStdString(), t);
      statusBar()->showMessage(tr("Wrote %1").arg(f));
    } catch (const std::exception& ex) {
      showError(tr("Cannot save"), QString::fromUtf8(ex.what()));
    }
  });
  v->addWidget(buttons);
  dialog->resize(720, 420);
  dialog->open();
}

void MainWindow::copyLaunchCommand() {
  try {
    const QString command = launch_->writePlanAndCommand();
    QGuiApplication::clipboard()->setText(command);
    statusBar()->showMessage(tr("Copied (the plan is in %1): %2").arg(launch_->runDir(), command));
  } catch (const std::exception& e) {
    showError(tr("Cannot write the launch command"), QString::fromUtf8(e.what()));
  }
}

}  // namespace moetune::gui
