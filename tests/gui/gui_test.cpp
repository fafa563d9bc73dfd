// moetune-gui under QTest (QT_QPA_PLATFORM=offscreen): a preset fills the table; a selected row
// drives the prediction and charts; changing ep gives the prediction `moetune simulate` gives;
// invalid values cannot be entered; a tiny CPU training runs from the launch panel; a malformed
// config.json shows an error dialog; every custom model passes QAbstractItemModelTester.
#include <QAbstractItemModelTester>
#include <QAction>
#include <QClipboard>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QMessageBox>
#include <QPlainTextEdit>
#include <QProcess>
#include <QSignalSpy>
#include <QSpinBox>
#include <QTableView>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QtTest>

#include <cmath>

#include "core/constraints.hpp"
#include "core/error.hpp"
#include "core/json_reader.hpp"
#include "core/presets.hpp"
#include "core/units.hpp"
#include "gui/charts.hpp"
#include "gui/heat_map.hpp"
#include "gui/launch_panel.hpp"
#include "gui/layout_controls.hpp"
#include "gui/layout_table_model.hpp"
#include "gui/main_window.hpp"
#include "gui/setup_panel.hpp"
#include "gui/timeline_view.hpp"
#include "planner/export.hpp"
#include "simulator/simulator.hpp"

using namespace moetune;
using namespace moetune::gui;

namespace {

constexpr int kWaitMs = 60000;  // generous: CI shares 2 cores with other tests

// Waits until the session has nothing running.
bool wait_idle(MainWindow& w) {
  if (!w.session()->busy() && w.session()->hasSetup()) return true;
  QSignalSpy idle(w.session(), &PlannerSession::idle);
  return idle.wait(kWaitMs) || !w.session()->busy();
}

// Mixtral 8x7B on one 8-GPU node: a few hundred valid layouts, searched in well under a second.
void plan_mixtral(MainWindow& w, int global_batch = 64) {
  w.setupPanel()->setModelSource(QStringLiteral("mixtral-8x7b"));
  w.setupPanel()->setClusterSource(QStringLiteral("p4d.24xlarge"));
  w.setupPanel()->setNodes(1);
  w.setupPanel()->setSequence(2048, global_batch);
  w.replan();
  QVERIFY(wait_idle(w));
  QVERIFY(w.session()->prediction().has_value());
}

Setup mixtral_setup() {
  Setup s;
  s.model = load_model("mixtral-8x7b");
  s.cluster = load_cluster("p4d.24xlarge", 1, std::nullopt);
  s.train.seq_len = 2048;
  s.train.global_batch = 64;
  s.train.moe.aux_loss_coef = s.model.router_aux_loss_coef;
  return s;
}

// The tiny model on this CPU, one rank: what `scripts/run-main` trains.
void plan_tiny(MainWindow& w) {
  SetupPanel* setup = w.setupPanel();
  setup->setModelSource(QStringLiteral("tiny"));
  setup->setClusterSource(QStringLiteral("cpu-local"));
  setup->setNodes(1);
  setup->setDevicesPerNode(1);
  setup->setSequence(64, 8);
  w.replan();
  QVERIFY(wait_idle(w));
  QVERIFY(w.session()->hasLayout());
}

}  // namespace

class GuiTest : public QObject {
  Q_OBJECT

 private slots:
  void presetFillsTable();
  void selectRowShowsPrediction();
  void changeEpMatchesCli();
  void invalidValueCannotBeEntered();
  void chartsSelectLayouts();
  void planRoundTrip();
  void trainingSettingsReachThePlan();
  void launchTinyTraining();
  void stopEndsRun();
  void calibrateReloadsCluster();
  void malformedConfigShowsError();
  void modelsPassTester();
};

void GuiTest::presetFillsTable() {
  MainWindow w;
  w.show();
  plan_mixtral(w);
  // The table holds exactly the planner's valid layouts for the same inputs, best first.
  const Setup s = mixtral_setup();
  const planner::SearchResult r = planner::search(s.model, s.cluster, s.train, {});
  QVERIFY(!r.ranked.empty());
  QCOMPARE(w.candidateModel()->rowCount(), static_cast<int>(r.ranked.size()));
  QCOMPARE(w.table()->model()->rowCount(), static_cast<int>(r.ranked.size()));
  QVERIFY(w.candidateModel()->candidate(0).layout == r.ranked.front().layout);
  QCOMPARE(w.candidateModel()->candidate(0).tokens_per_s, r.ranked.front().tokens_per_s);
  // The best layout is selected, and the rejected layouts are listed with their reasons.
  QVERIFY(w.session()->layout() == r.ranked.front().layout);
  QVERIFY(w.rejectedModel()->rowCount() > 0);
  const QString reason = w.rejectedModel()->index(0, RejectedTableModel::Reason).data().toString();
  QVERIFY2(!reason.isEmpty(), "a rejected layout carries its reason");
  // "fits only" hides the layouts that do not fit.
  int fitting = 0;
  for (const auto& c : r.ranked)
    fitting += c.fits ? 1 : 0;
  w.candidateProxy()->setFitsOnly(true);
  QCOMPARE(w.table()->model()->rowCount(), fitting);
}

void GuiTest::selectRowShowsPrediction() {
  MainWindow w;
  w.show();
  plan_mixtral(w);
  QTableView* table = w.table();
  const int row = 5;
  QVERIFY(table->model()->rowCount() > row);
  const QModelIndex index = table->model()->index(row, CandidateTableModel::TokensPerS);
  table->scrollTo(index);
  QSignalSpy ready(w.session(), &PlannerSession::predictionReady);
  QTest::mouseClick(table->viewport(), Qt::LeftButton, {}, table->visualRect(index).center());
  QVERIFY(ready.wait(kWaitMs));
  const planner::Candidate& c =
      w.candidateModel()->candidate(w.candidateProxy()->mapToSource(index).row());
  QVERIFY(w.session()->layout() == c.layout);
  const Plan& plan = w.session()->prediction()->plan;
  QVERIFY(plan.layout == c.layout);
  const Prediction& p = *plan.prediction;
  QCOMPARE(p.step_time_s, c.step_time_s);  // the same simulator call as the search
  // The controls, the summary and the charts show this layout.
  QCOMPARE(w.controls()->combo(LayoutField::Ep)->currentText(), QString::number(c.layout.ep));
  QCOMPARE(w.controls()->combo(LayoutField::Hs)->currentText(), QString::number(c.layout.hs));
  QVERIFY(w.summary()->text().contains(QString::number(p.tokens_per_s, 'f', 0)));
  const auto& mem = w.memoryChart()->segments();
  QCOMPARE(static_cast<int>(mem.size()), 8);
  QCOMPARE(mem[0].second, p.memory.parameters / kGiB);
  QCOMPARE(mem[4].second, p.memory.activations / kGiB);
  QCOMPARE(w.memoryChart()->capacityGiB(), p.device_memory_bytes / kGiB);
  double time_sum = 0;
  for (const auto& seg : w.stepTimeChart()->segments())
    time_sum += seg.second;
  QVERIFY(time_sum > 0);
  QCOMPARE(w.stepTimeChart()->hiddenSeconds(), p.time.overlapped_comm);
  QVERIFY(w.timeline()->opCount() > 0);
  QCOMPARE(w.heatMap()->grid().tp, c.layout.tp);
}

void GuiTest::changeEpMatchesCli() {
  MainWindow w;
  w.show();
  plan_mixtral(w);
  const Layout before = w.session()->layout();
  const Prediction before_p = *w.session()->prediction()->plan.prediction;
  QComboBox* ep = w.controls()->combo(LayoutField::Ep);
  QVERIFY(ep->count() > 1);
  int target = -1;
  for (int i = 0; i < ep->count(); ++i) {
    if (ep->itemText(i).toLongLong() != before.ep) target = i;
  }
  QVERIFY(target >= 0);
  QSignalSpy ready(w.session(), &PlannerSession::predictionReady);
  ep->setCurrentIndex(target);
  QVERIFY(ready.wait(kWaitMs));
  QVERIFY(wait_idle(w));
  const Layout l = w.session()->layout();
  QCOMPARE(l.ep, ep->itemText(target).toLongLong());
  const Prediction& p = *w.session()->prediction()->plan.prediction;
  QVERIFY(p.step_time_s != before_p.step_time_s ||
          p.peak_memory_bytes != before_p.peak_memory_bytes);

  // `moetune simulate --json` for the same layout gives the same figures.
  QStringList args = {"simulate",
                      "--model",
                      "mixtral-8x7b",
                      "--cluster",
                      "p4d.24xlarge",
                      "--nodes",
                      "1",
                      "--seq",
                      "2048",
                      "--global-batch",
                      "64",
                      "--tp",
                      QString::number(l.tp),
                      "--pp",
                      QString::number(l.pp),
                      "--vpp",
                      QString::number(l.vpp),
                      "--ep",
                      QString::number(l.ep),
                      "--hs",
                      QString::number(l.hs),
                      "--order",
                      QString::fromStdString(order_to_string(l.order)),
                      "--micro-batch",
                      QString::number(l.micro_batch),
                      "--recompute",
                      QString::fromStdString(to_string(l.recompute)),
                      "--optimizer-offload",
                      l.optimizer_offload ? "on" : "off",
                      "--activation-offload",
                      l.activation_offload ? "on" : "off",
                      "--distributed-optimizer",
                      l.distributed_optimizer ? "on" : "off",
                      "--json"};
  QProcess cli;
  cli.start(QStringLiteral(MOETUNE_BINARY), args);
  QVERIFY(cli.waitForFinished(kWaitMs));
  QCOMPARE(cli.exitCode(), 0);
  const Json j = parse_json_text(cli.readAllStandardOutput().toStdString(), "moetune simulate");
  QCOMPARE(j["ep"].get<std::int64_t>(), l.ep);
  QCOMPARE(j["hs"].get<std::int64_t>(), l.hs);
  QCOMPARE(j["rep"].get<std::int64_t>(), l.rep);
  QCOMPARE(j["distributed_optimizer"].get<bool>(), l.distributed_optimizer);
  // JSON text carries doubles with round-trip precision, so the figures agree exactly.
  QCOMPARE(j["fits"].get<bool>(), p.fits);
  QCOMPARE(j["peak_memory_bytes"].get<double>(), p.peak_memory_bytes);
  QCOMPARE(j["step_time_s"].get<double>(), p.step_time_s);
  QCOMPARE(j["tokens_per_s"].get<double>(), p.tokens_per_s);
  QCOMPARE(j["mfu"].get<double>(), p.mfu);
  QCOMPARE(j["cost_per_billion_tokens_usd"].get<double>(), p.cost_per_billion_tokens_usd);
  QCOMPARE(j["memory"]["activations"].get<double>(), p.memory.activations);
}

void GuiTest::invalidValueCannotBeEntered() {
  MainWindow w;
  w.show();
  plan_mixtral(w);
  const Setup& s = w.session()->setup();
  for (LayoutField f : kLayoutFields) {
    QComboBox* combo = w.controls()->combo(f);
    QVERIFY2(!combo->isEditable(), "layout controls take no typed values");
    // Every offered value leads to a layout that passes the rules.
    for (int i = 0; i < combo->count(); ++i) {
      const auto next = nearest_layout(w.session()->result().ranked, w.session()->layout(), f,
                                       combo->itemText(i).toStdString());
      QVERIFY(next.has_value());
      QVERIFY(!check_layout(s.model, s.cluster, s.train, *next).has_value());
    }
  }
  // Mixtral has 8 experts: ep=3 (and 16) is never offered, and cannot be typed in.
  QComboBox* ep = w.controls()->combo(LayoutField::Ep);
  QCOMPARE(ep->findText(QStringLiteral("3")), -1);
  QCOMPARE(ep->findText(QStringLiteral("16")), -1);
  for (int i = 0; i < ep->count(); ++i)
    QCOMPARE(8 % ep->itemText(i).toInt(), 0);
  const std::int64_t ep_before = w.session()->layout().ep;
  ep->setFocus();
  QTest::keyClicks(ep, QStringLiteral("3"));
  ep->setCurrentText(QStringLiteral("3"));
  QVERIFY(wait_idle(w));
  QVERIFY(w.session()->layout().ep != 3);
  QCOMPARE(w.session()->layout().ep, ep_before);
  // tp is offered only as divisors of the 8 devices of a node.
  QComboBox* tp = w.controls()->combo(LayoutField::Tp);
  for (int i = 0; i < tp->count(); ++i)
    QCOMPARE(8 % tp->itemText(i).toInt(), 0);
}

void GuiTest::chartsSelectLayouts() {
  MainWindow w;
  w.show();
  plan_mixtral(w);
  // Clicking the scatter at a layout's point selects it.
  const auto& ranked = w.session()->result().ranked;
  const planner::Candidate* target = nullptr;
  for (const auto& c : ranked) {
    if (c.pareto && !(c.layout == w.session()->layout())) target = &c;
  }
  QVERIFY(target != nullptr);
  QVERIFY(w.paretoChart()->plottedCount() > 0);
  QSignalSpy selected(w.session(), &PlannerSession::layoutSelected);
  w.paretoChart()->clickAt(target->peak_memory_bytes / kGiB, target->tokens_per_s);
  QCOMPARE(selected.count(), 1);
  const Layout picked = w.session()->layout();
  const int row = find_candidate(ranked, picked);
  QVERIFY(row >= 0);
  QCOMPARE(ranked[static_cast<std::size_t>(row)].peak_memory_bytes, target->peak_memory_bytes);
  QCOMPARE(ranked[static_cast<std::size_t>(row)].tokens_per_s, target->tokens_per_s);
  QVERIFY(wait_idle(w));

  // Clicking a heat-map cell selects the best layout with that ep and hs (at tp = 1, where the
  // grid has several cells).
  for (const auto& c : ranked) {
    if (c.layout.tp == 1 && c.layout.pp == 1) {
      w.session()->selectLayout(c.layout);
      break;
    }
  }
  QVERIFY(wait_idle(w));
  QCOMPARE(w.session()->layout().tp, 1);
  w.showView(QStringLiteral("heatmap"));
  const HeatGrid& grid = w.heatMap()->grid();
  QVERIFY(!grid.eps.empty());
  std::size_t r = 0, col = 0;
  bool found = false;
  for (std::size_t i = 0; i < grid.eps.size() && !found; ++i) {
    for (std::size_t j = 0; j < grid.hss.size() && !found; ++j) {
      const HeatCell& cell = grid.at(i, j);
      if (cell.valid &&
          (grid.eps[i] != w.session()->layout().ep || grid.hss[j] != w.session()->layout().hs)) {
        r = i;
        col = j;
        found = true;
      }
    }
  }
  QVERIFY(found);
  const Layout expected = grid.at(r, col).best;
  QTest::mouseClick(w.heatMap(), Qt::LeftButton, {}, w.heatMap()->cellCenter(r, col));
  QVERIFY(w.session()->layout() == expected);
  QCOMPARE(w.session()->layout().ep, grid.eps[r]);
  QCOMPARE(w.session()->layout().hs, grid.hss[col]);
  QVERIFY(wait_idle(w));
}

void GuiTest::planRoundTrip() {
  QTemporaryDir dir;
  QVERIFY(dir.isValid());
  const QString file = dir.filePath(QStringLiteral("plan.json"));
  Layout saved;
  {
    MainWindow w;
    w.show();
    plan_mixtral(w);
    QComboBox* hs = w.controls()->combo(LayoutField::Hs);
    QVERIFY(hs->count() > 1);
    hs->setCurrentIndex(hs->currentIndex() == 0 ? 1 : 0);
    QVERIFY(wait_idle(w));
    saved = w.session()->layout();
    QVERIFY(w.savePlan(file));
  }
  const Plan plan = read_plan_file(file.toStdString());
  QVERIFY(plan.layout == saved);
  MainWindow w;
  w.show();
  QVERIFY(w.openPlan(file));
  QVERIFY(wait_idle(w));
  QVERIFY(w.session()->layout() == saved);
  QVERIFY(w.session()->setup().model == plan.model);
  QVERIFY(w.session()->setup().cluster == plan.cluster);
  QVERIFY(w.session()->setup().train == plan.train);
  QCOMPARE(*w.session()->prediction()->plan.prediction, *plan.prediction);
  // The launch command names the plan it wrote.
  w.launchPanel()->setRunDir(dir.filePath(QStringLiteral("run")));
  const QString command = w.launchPanel()->writePlanAndCommand();
  QVERIFY(command.contains(QStringLiteral(" launch --plan ")));
  QVERIFY(read_plan_file(dir.filePath(QStringLiteral("run/plan.json")).toStdString()).layout ==
          saved);

  // The File menu's exports show what the planner library exports for this plan, and the launch
  // command goes to the clipboard.
  auto action = [&w](const QString& prefix) -> QAction* {
    for (QAction* a : w.findChildren<QAction*>()) {
      if (a->text().remove(QLatin1Char('&')).startsWith(prefix)) return a;
    }
    return nullptr;
  };
  QAction* megatron = action(QStringLiteral("Export Megatron"));
  QVERIFY(megatron != nullptr);
  megatron->trigger();
  const QString expected = QString::fromStdString(planner::export_megatron(plan).text);
  bool shown = false;
  for (QPlainTextEdit* text : w.findChildren<QPlainTextEdit*>()) {
    shown = shown || text->toPlainText() == expected;
  }
  QVERIFY2(shown, "the Megatron export dialog shows export_megatron's text");
  QAction* copy = action(QStringLiteral("Copy launch command"));
  QVERIFY(copy != nullptr);
  copy->trigger();
  QCOMPARE(QGuiApplication::clipboard()->text(), command);
}

void GuiTest::trainingSettingsReachThePlan() {
  MainWindow w;
  w.show();
  plan_tiny(w);
  SetupPanel* setup = w.setupPanel();
  auto real = [setup](const char* name) {
    auto* box = setup->findChild<QDoubleSpinBox*>(QLatin1String(name));
    if (box == nullptr) qFatal("no %s setting", name);
    return box;
  };
  auto* warmup = setup->findChild<QSpinBox*>(QStringLiteral("warmup_steps"));
  QVERIFY(warmup != nullptr);
  // Defaults as the CLI's: TrainSpec's, the aux-loss coefficient the model's.
  const Setup defaults = setup->readSetup();
  QCOMPARE(defaults.train.optimizer, TrainSpec{}.optimizer);
  QCOMPARE(defaults.train.moe.aux_loss_coef, load_model("tiny").router_aux_loss_coef);

  real("lr")->setValue(0.002);
  real("min_lr")->setValue(0.0002);
  real("aux_loss_coef")->setValue(0.03);
  real("z_loss_coef")->setValue(0.001);
  real("weight_decay")->setValue(0.05);
  real("grad_clip")->setValue(0.5);
  warmup->setValue(7);
  w.replan();  // at once instead of after the edit pause
  QVERIFY(wait_idle(w));
  const TrainSpec t = w.session()->setup().train;
  QVERIFY(setup->readSetup().train == t);
  QCOMPARE(t.optimizer.lr, 0.002);
  QCOMPARE(t.optimizer.min_lr, 0.0002);
  QCOMPARE(t.optimizer.warmup_steps, std::int64_t{7});
  QCOMPARE(t.optimizer.weight_decay, 0.05);
  QCOMPARE(t.optimizer.grad_clip, 0.5);
  QCOMPARE(t.moe.aux_loss_coef, 0.03);
  QCOMPARE(t.moe.z_loss_coef, 0.001);

  // The plan the launch panel writes carries them, and a window that opens it shows them again.
  QTemporaryDir dir;
  w.launchPanel()->setRunDir(dir.filePath(QStringLiteral("run")));
  w.launchPanel()->writePlanAndCommand();
  const QString file = dir.filePath(QStringLiteral("run/plan.json"));
  QVERIFY(read_plan_file(file.toStdString()).train == t);
  MainWindow again;
  QVERIFY(again.openPlan(file));
  QVERIFY(wait_idle(again));
  QVERIFY(again.setupPanel()->readSetup().train == t);

  // A min learning rate above the learning rate is refused with the reason.
  real("min_lr")->setValue(0.01);
  bool refused = false;
  try {
    (void)setup->readSetup();
  } catch (const InputError& e) {
    refused = QString::fromUtf8(e.what()).contains(QStringLiteral("min learning rate"));
  }
  QVERIFY(refused);
}

void GuiTest::launchTinyTraining() {
  QTemporaryDir dir;
  QVERIFY(dir.isValid());
  MainWindow w;
  w.show();
  plan_tiny(w);
  SetupPanel* setup = w.setupPanel();
  LaunchPanel* launch = w.launchPanel();
  launch->setRunDir(dir.filePath(QStringLiteral("run")));
  launch->setSteps(3);
  launch->setLauncher(QStringLiteral("local"));
  QSignalSpy steps(launch, &LaunchPanel::stepMeasured);
  QSignalSpy finished(launch, &LaunchPanel::runFinished);
  launch->start();
  QVERIFY(launch->running());
  QVERIFY2(finished.wait(120000), qPrintable(launch->statusText()));
  QCOMPARE(finished.first().first().toInt(), 0);
  // Progress arrived step by step from run.jsonl, and every step is charted.
  QCOMPARE(steps.count(), 3);
  QCOMPARE(static_cast<int>(launch->steps().size()), 3);
  QCOMPARE(launch->steps().back().step, 3);
  QVERIFY(std::isfinite(launch->steps().back().loss) && launch->steps().back().loss > 0);
  QCOMPARE(launch->lossChart()->pointCount(), 3);
  QCOMPARE(launch->rateChart()->pointCount(), 3);
  // Predicted and measured side by side.
  QTableWidget* table = launch->comparison();
  QVERIFY(table->rowCount() >= 3);
  QCOMPARE(table->item(1, 0)->text(), QStringLiteral("tokens/s"));
  // Shown without decimals above a thousand, else to four digits.
  const double predicted = w.session()->prediction()->plan.prediction->tokens_per_s;
  QVERIFY(std::abs(table->item(1, 1)->text().toDouble() - predicted) <= 5e-4 * predicted + 0.5);
  QVERIFY(table->item(1, 2)->text().toDouble() > 0);

  // Calibrate: the real `moetune calibrate` refits on the run, and the GUI re-ranks with it.
  QSignalSpy calibrated(launch, &LaunchPanel::calibrated);
  QSignalSpy searched(w.session(), &PlannerSession::searchFinished);
  launch->calibrate();
  QVERIFY2(calibrated.wait(kWaitMs), qPrintable(launch->statusText()));
  QVERIFY(QFile::exists(calibrated.first().first().toString()));
  QCOMPARE(setup->clusterSource(), calibrated.first().first().toString());
  QVERIFY(searched.count() > 0 || searched.wait(kWaitMs));
}

void GuiTest::stopEndsRun() {
  QTemporaryDir dir;
  QVERIFY(dir.isValid());
  MainWindow w;
  w.show();
  plan_tiny(w);
  LaunchPanel* launch = w.launchPanel();
  launch->setRunDir(dir.filePath(QStringLiteral("run")));
  launch->setSteps(1000000);
  QSignalSpy steps(launch, &LaunchPanel::stepMeasured);
  QSignalSpy finished(launch, &LaunchPanel::runFinished);
  launch->start();
  QVERIFY2(steps.wait(kWaitMs), qPrintable(launch->statusText()));
  launch->stop();
  QVERIFY(finished.wait(kWaitMs));
  QVERIFY(finished.first().first().toInt() != 0);
  QVERIFY(!launch->running());
  QVERIFY(launch->steps().size() < 1000000);
}

// The Calibrate button's whole path with a known outcome, through a stand-in for `moetune`: it
// lists `calibrate` in --help and writes the base cluster with gemm_efficiency halved. The GUI
// must pass the run and the run's cluster, load the written cluster and re-rank with it. A
// `moetune` without the subcommand (an older binary named by MOETUNE_CLI) gets a plain message.
void GuiTest::calibrateReloadsCluster() {
  QTemporaryDir dir;
  QVERIFY(dir.isValid());
  MainWindow w;
  w.show();
  plan_tiny(w);
  LaunchPanel* launch = w.launchPanel();
  launch->setRunDir(dir.filePath(QStringLiteral("run")));
  launch->setSteps(2);
  QSignalSpy finished(launch, &LaunchPanel::runFinished);
  launch->start();
  QVERIFY(finished.wait(kWaitMs));
  QCOMPARE(finished.first().first().toInt(), 0);
  const double efficiency = w.session()->setup().cluster.device.gemm_efficiency;
  const double tokens_per_s = w.session()->prediction()->plan.prediction->tokens_per_s;

  const QString fake = dir.filePath(QStringLiteral("moetune"));
  QFile script(fake);
  QVERIFY(script.open(QIODevice::WriteOnly));
  script.write(R"(#!/bin/sh
if [ "$1" = "--help" ]; then printf 'Subcommands:\n  calibrate  refit a cluster\n'; exit 0; fi
[ "$1" = calibrate ] || exit 3
shift
while [ $# -gt 0 ]; do
  case "$1" in --runs) runs=$2 ;; --base) base=$2 ;; --out) out=$2 ;; *) exit 4 ;; esac
  shift 2
done
[ -s "$runs" ] && [ -s "$base" ] && [ -n "$out" ] || exit 5
python3 - "$base" "$out" <<'PY'
import json, sys
cluster = json.load(open(sys.argv[1]))
cluster["device"]["gemm_efficiency"] /= 2
json.dump(cluster, open(sys.argv[2], "w"), indent=2)
PY
)");
  script.close();
  QVERIFY(script.setPermissions(QFile::ReadOwner | QFile::WriteOwner | QFile::ExeOwner));
  const QByteArray cli = qgetenv("MOETUNE_CLI");
  {
    const QString old = dir.filePath(QStringLiteral("old-moetune"));
    QFile stand_in(old);
    QVERIFY(stand_in.open(QIODevice::WriteOnly));
    stand_in.write("#!/bin/sh\nprintf 'Subcommands:\\n  plan  search\\n'\n");
    stand_in.close();
    QVERIFY(stand_in.setPermissions(QFile::ReadOwner | QFile::WriteOwner | QFile::ExeOwner));
    qputenv("MOETUNE_CLI", old.toLocal8Bit());
    QSignalSpy unavailable(launch, &LaunchPanel::calibrationUnavailable);
    launch->calibrate();
    const bool said = unavailable.wait(kWaitMs);
    qputenv("MOETUNE_CLI", cli);
    QVERIFY(said);
    QVERIFY2(launch->statusText().contains(QStringLiteral("no `calibrate` subcommand")),
             qPrintable(launch->statusText()));
  }
  qputenv("MOETUNE_CLI", fake.toLocal8Bit());
  QSignalSpy calibrated(launch, &LaunchPanel::calibrated);
  launch->calibrate();
  const bool ok = calibrated.wait(kWaitMs);
  qputenv("MOETUNE_CLI", cli);
  QVERIFY2(ok, qPrintable(launch->statusText()));
  const QString out = calibrated.first().first().toString();
  QCOMPARE(w.setupPanel()->clusterSource(), out);
  QVERIFY(wait_idle(w));
  QCOMPARE(w.session()->setup().cluster.device.gemm_efficiency, efficiency / 2);
  QVERIFY(w.session()->prediction()->plan.prediction->tokens_per_s < tokens_per_s);
}

void GuiTest::malformedConfigShowsError() {
  QTemporaryDir dir;
  QVERIFY(dir.isValid());
  MainWindow w;
  w.show();
  plan_mixtral(w);
  const int rows = w.candidateModel()->rowCount();
  struct Case {
    const char* name;
    const char* text;
  } cases[] = {{"broken.json", "{ \"model_type\": \"mixtral\", \"hidden_size\": "},
               {"missing.json", "{ \"model_type\": \"mixtral\", \"hidden_size\": 4096 }"}};
  for (const Case& c : cases) {
    const QString file = dir.filePath(QString::fromLatin1(c.name));
    QFile f(file);
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write(c.text);
    f.close();
    QSignalSpy errors(&w, &MainWindow::errorShown);
    w.setupPanel()->setModelSource(file);
    w.replan();
    QCOMPARE(errors.count(), 1);
    QVERIFY2(errors.first().first().toString().contains(QString::fromLatin1(c.name)),
             qPrintable(errors.first().first().toString()));
    QVERIFY(w.errorDialog() != nullptr);
    QVERIFY(w.errorDialog()->isVisible());
    QCOMPARE(w.errorDialog()->icon(), QMessageBox::Critical);
    // The window goes on: the last good plan is still shown.
    QCOMPARE(w.candidateModel()->rowCount(), rows);
    w.errorDialog()->accept();
  }
  // And a good model plans again.
  w.setupPanel()->setModelSource(QStringLiteral("mixtral-8x7b"));
  w.replan();
  QVERIFY(wait_idle(w));
  QCOMPARE(w.candidateModel()->rowCount(), rows);
}

void GuiTest::modelsPassTester() {
  MainWindow w;
  const auto mode = QAbstractItemModelTester::FailureReportingMode::QtTest;
  QAbstractItemModelTester candidates(w.candidateModel(), mode);
  QAbstractItemModelTester proxy(w.candidateProxy(), mode);
  QAbstractItemModelTester rejected(w.rejectedModel(), mode);
  w.show();
  // The testers re-check every row on each change: a small batch keeps the table short.
  plan_mixtral(w, 8);
  QVERIFY(w.candidateModel()->rowCount() > 20);
  // Sorting, filtering and a new search, each watched by the testers.
  w.table()->sortByColumn(CandidateTableModel::PeakMemory, Qt::DescendingOrder);
  QAbstractItemModel* shown = w.table()->model();
  for (int i = 1; i < shown->rowCount(); ++i) {
    QVERIFY(shown->index(i - 1, CandidateTableModel::PeakMemory).data(kSortRole).toDouble() >=
            shown->index(i, CandidateTableModel::PeakMemory).data(kSortRole).toDouble());
  }
  w.candidateProxy()->setWords(QStringLiteral("ep2"));  // not rep2
  QVERIFY(w.candidateProxy()->rowCount() > 0);
  for (int i = 0; i < w.candidateProxy()->rowCount(); ++i) {
    const int source = w.candidateProxy()->mapToSource(w.candidateProxy()->index(i, 0)).row();
    QCOMPARE(w.candidateModel()->candidate(source).layout.ep, 2);
  }
  w.candidateProxy()->setParetoOnly(true);
  w.candidateProxy()->setWords(QString());
  w.setupPanel()->setSequence(4096, 16);
  w.replan();
  QVERIFY(wait_idle(w));
  QVERIFY(w.rejectedModel()->rowCount() > 0);
}

QTEST_MAIN(GuiTest)
#include "gui_test.moc"
