// The launch panel: a `moetune launch` child process and its run.jsonl.
#include "gui/launch_panel.hpp"

#include <QComboBox>
#include <QCoreApplication>
#include <QDir>
#include <QFile>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QRegularExpression>
#include <QSpinBox>
#include <QSplitter>
#include <QTableWidget>
#include <QTimer>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/json_reader.hpp"
#include "core/units.hpp"
#include "gui/app_paths.hpp"
#include "gui/charts.hpp"

namespace moetune::gui {

namespace {

QString shell_quote(const QString& s) {
  static const QString safe =
      QStringLiteral("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=./:,@%");
  bool plain = !s.isEmpty();
  for (QChar c : s)
    plain = plain && safe.contains(c);
  if (plain) return s;
  QString out = QStringLiteral("'");
  for (QChar c : s)
    out += c == QLatin1Char('\'') ? QStringLiteral("'\\''") : QString(c);
  return out + QLatin1Char('\'');
}

// Thousands without decimals, small figures with four significant digits.
QString figure(double v) {
  return std::abs(v) >= 1000 ? QString::number(v, 'f', 0) : QString::number(v, 'g', 4);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

LaunchPanel::LaunchPanel(QWidget* parent)
    : QWidget(parent),
      launcher_(new QComboBox(this)),
      hostfile_(new QLineEdit(this)),
      steps_spin_(new QSpinBox(this)),
      data_(new QLineEdit(this)),
      run_dir_(new QLineEdit(this)),
      start_(new QPushButton(tr("Start"), this)),
      stop_(new QPushButton(tr("Stop"), this)),
      calibrate_(new QPushButton(tr("Calibrate"), this)),
      status_(new QLabel(this)),
      log_(new QPlainTextEdit(this)),
      loss_chart_(new SeriesChart(tr("Loss"), tr("cross-entropy"), this)),
      rate_chart_(new SeriesChart(tr("Throughput"), tr("tokens/s"), this)),
      comparison_(new QTableWidget(this)),
      poll_(new QTimer(this)) {
  launcher_->addItem(tr("local CPU"), QStringLiteral("local"));
  launcher_->addItem(tr("mpirun (hostfile)"), QStringLiteral("mpirun"));
  launcher_->addItem(tr("Slurm (sbatch)"), QStringLiteral("slurm"));
  hostfile_->setPlaceholderText(tr("MPI hostfile (mpirun)"));
  hostfile_->setEnabled(false);
  steps_spin_->setRange(1, 10000000);
  steps_spin_->setValue(20);
  data_->setPlaceholderText(tr("token file (empty: the built-in synthetic corpus)"));
  run_dir_->setText(
      QDir(QDir::tempPath())
          .filePath(QStringLiteral("moetune-gui-%1").arg(QCoreApplication::applicationPid())));
  stop_->setEnabled(false);
  status_->setObjectName(QStringLiteral("launchStatus"));
  status_->setWordWrap(true);
  status_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  log_->setReadOnly(true);
  log_->setMaximumBlockCount(2000);
  log_->setPlaceholderText(tr("output of moetune launch"));
  comparison_->setColumnCount(3);
  comparison_->setHorizontalHeaderLabels({tr("quantity"), tr("predicted"), tr("measured")});
  comparison_->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
  comparison_->verticalHeader()->hide();
  comparison_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  connect(launcher_, &QComboBox::currentIndexChanged, this, [this] {
    hostfile_->setEnabled(launcher_->currentData().toString() == QLatin1String("mpirun"));
  });

  auto* settings = new QGroupBox(tr("Run the selected plan"), this);
  auto* form = new QFormLayout(settings);
  form->addRow(tr("launcher"), launcher_);
  form->addRow(tr("hostfile"), hostfile_);
  form->addRow(tr("steps"), steps_spin_);
  form->addRow(tr("data"), data_);
  form->addRow(tr("run folder"), run_dir_);
  auto* buttons = new QHBoxLayout;
  buttons->addWidget(start_);
  buttons->addWidget(stop_);
  buttons->addWidget(calibrate_);
  form->addRow(buttons);
  form->addRow(status_);

  auto* left = new QVBoxLayout;
  left->addWidget(settings);
  compare_box_ = new QGroupBox(tr("Predicted vs measured (per step)"), this);
  auto* compare_box = compare_box_;
  auto* compare_layout = new QVBoxLayout(compare_box);
  compare_layout->addWidget(comparison_);
  left->addWidget(compare_box, 1);
  auto* charts = new QVBoxLayout;
  charts->addWidget(loss_chart_, 1);
  charts->addWidget(rate_chart_, 1);
  charts->addWidget(log_);
  log_->setMaximumHeight(110);
  auto* top = new QHBoxLayout(this);
  top->addLayout(left, 2);
  top->addLayout(charts, 3);

  connect(start_, &QPushButton::clicked, this, &LaunchPanel::start);
  connect(stop_, &QPushButton::clicked, this, &LaunchPanel::stop);
  connect(calibrate_, &QPushButton::clicked, this, &LaunchPanel::calibrate);
  poll_->setInterval(200);
  connect(poll_, &QTimer::timeout, this, &LaunchPanel::readMetrics);
  setStatus(
      tr("Choose a layout, then Start: the plan is written to the run folder and trained "
         "with `moetune launch`."));
}

LaunchPanel::~LaunchPanel() {
  for (QProcess* p : {process_, calibrate_process_}) {
    if (p != nullptr && p->state() != QProcess::NotRunning) {
      p->disconnect(this);
      p->kill();
      p->waitForFinished(3000);
    }
  }
}

void LaunchPanel::setPlanSource(std::function<std::optional<Plan>()> source) {
  plan_source_ = std::move(source);
}

void LaunchPanel::setRunDir(const QString& dir) {
  run_dir_->setText(dir);
}
QString LaunchPanel::runDir() const {
  return QDir(run_dir_->text().trimmed()).absolutePath();
}
void LaunchPanel::setSteps(int steps) {
  steps_spin_->setValue(steps);
}

void LaunchPanel::setLauncher(const QString& launcher) {
  launcher_->setCurrentIndex(launcher_->findData(launcher));
}

bool LaunchPanel::running() const {
  return process_ != nullptr && process_->state() != QProcess::NotRunning;
}

QString LaunchPanel::statusText() const {
  return status_->text();
}

void LaunchPanel::setStatus(const QString& text) {
  status_->setText(text);
}

void LaunchPanel::appendLog(const QString& text) {
  log_->appendPlainText(text.trimmed());
}

QStringList LaunchPanel::launchArguments(const QString& plan_path) const {
  const QDir dir(runDir());
  const QString launcher = launcher_->currentData().toString();
  QStringList args = {QStringLiteral("launch"), QStringLiteral("--plan"), plan_path,
                      QStringLiteral("--launcher"), launcher};
  if (launcher == QLatin1String("mpirun"))
    args << QStringLiteral("--hostfile") << hostfile_->text();
  if (launcher == QLatin1String("slurm")) {
    args << QStringLiteral("--script") << dir.filePath(QStringLiteral("moetune.sbatch"));
  }
  args << QStringLiteral("--") << QStringLiteral("--steps") << QString::number(steps_spin_->value())
       << QStringLiteral("--metrics") << dir.filePath(QStringLiteral("run.jsonl"))
       << QStringLiteral("--quiet");
  if (!data_->text().trimmed().isEmpty()) {
    args << QStringLiteral("--data") << QDir().absoluteFilePath(data_->text().trimmed());
  }
  return args;
}

QString LaunchPanel::writePlanAndCommand() {
  const std::optional<Plan> plan = plan_source_ ? plan_source_() : std::nullopt;
  if (!plan) throw InputError("no layout is selected");
  if (!QDir().mkpath(runDir())) {
    throw InputError("cannot create the run folder " + runDir().toStdString());
  }
  const QString plan_path = QDir(runDir()).filePath(QStringLiteral("plan.json"));
  write_plan_file(plan_path.toStdString(), *plan);
  QString cli = moetune_cli_path();
  if (cli.isEmpty()) cli = QStringLiteral("moetune");
  QString line = shell_quote(cli);
  for (const QString& a : launchArguments(plan_path))
    line += QLatin1Char(' ') + shell_quote(a);
  return line;
}

void LaunchPanel::start() {
  if (running()) return;
  const QString cli = moetune_cli_path();
  if (cli.isEmpty()) {
    setStatus(
        tr("The moetune command-line tool was not found next to moetune-gui; set "
           "MOETUNE_CLI to its path."));
    return;
  }
  if (launcher_->currentData().toString() == QLatin1String("mpirun") &&
      hostfile_->text().trimmed().isEmpty()) {
    setStatus(tr("mpirun needs a hostfile listing the plan's nodes."));
    return;
  }
  std::optional<Plan> plan = plan_source_ ? plan_source_() : std::nullopt;
  if (!plan) {
    setStatus(tr("Select a layout first."));
    return;
  }
  const QDir dir(runDir());
  QString plan_path;
  try {
    if (!QDir().mkpath(runDir())) throw InputError("cannot create " + runDir().toStdString());
    plan_path = dir.filePath(QStringLiteral("plan.json"));
    write_plan_file(plan_path.toStdString(), *plan);
  } catch (const std::exception& e) {
    setStatus(tr("Cannot write the plan: %1").arg(QString::fromUtf8(e.what())));
    return;
  }
  metrics_path_ = dir.filePath(QStringLiteral("run.jsonl"));
  QFile::remove(metrics_path_);
  metrics_offset_ = 0;
  partial_line_.clear();
  header_seen_ = false;
  steps_.clear();
  running_plan_ = plan;
  loss_chart_->clear();
  rate_chart_->clear();
  rate_chart_->setPredicted(plan->prediction ? plan->prediction->tokens_per_s : 0.0);
  log_->clear();
  updateComparison();

  if (process_ != nullptr) process_->deleteLater();  // the previous run's, long finished
  process_ = new QProcess(this);
  process_->setProgram(cli);
  process_->setArguments(launchArguments(plan_path));
  process_->setWorkingDirectory(runDir());
  process_->setProcessChannelMode(QProcess::MergedChannels);
  connect(process_, &QProcess::readyRead, this,
          [this, p = process_] { appendLog(QString::fromLocal8Bit(p->readAll())); });
  connect(process_, &QProcess::errorOccurred, this, [this, p = process_](QProcess::ProcessError) {
    if (p->state() == QProcess::NotRunning && p->exitCode() == 0) {
      setStatus(tr("Could not start %1: %2").arg(p->program(), p->errorString()));
    }
  });
  connect(process_, &QProcess::finished, this,
          [this, p = process_](int code, QProcess::ExitStatus st) {
            poll_->stop();
            readMetrics();
            appendLog(QString::fromLocal8Bit(p->readAll()));
            start_->setEnabled(true);
            stop_->setEnabled(false);
            const bool ok = st == QProcess::NormalExit && code == 0;
            setStatus(
                ok ? tr("Finished: %1 steps measured in %2.").arg(steps_.size()).arg(metrics_path_)
                   : tr("The run ended with exit status %1 after %2 steps (see the output below).")
                         .arg(st == QProcess::NormalExit ? code : -1)
                         .arg(steps_.size()));
            emit runFinished(st == QProcess::NormalExit ? code : -1);
          });
  appendLog(QStringLiteral("$ ") + shell_quote(cli) + QLatin1Char(' ') +
            process_->arguments().join(QLatin1Char(' ')));
  process_->start();
  start_->setEnabled(false);
  stop_->setEnabled(true);
  poll_->start();
  setStatus(tr("Running %1 …").arg(QString::fromStdString(describe(plan->layout))));
  emit runStarted();
}

void LaunchPanel::stop() {
  if (!running()) return;
  process_->terminate();
  QTimer::singleShot(3000, process_, [p = process_] {
    if (p->state() != QProcess::NotRunning) p->kill();
  });
  setStatus(tr("Stopping…"));
}

void LaunchPanel::readMetrics() {
  QFile file(metrics_path_);
  if (metrics_path_.isEmpty() || !file.open(QIODevice::ReadOnly)) return;
  if (file.size() < metrics_offset_) return;  // replaced underneath us
  file.seek(metrics_offset_);
  const QByteArray chunk = file.readAll();
  metrics_offset_ += chunk.size();
  partial_line_ += chunk;
  bool added = false;
  for (qsizetype end = partial_line_.indexOf('\n'); end >= 0; end = partial_line_.indexOf('\n')) {
    const std::string line = partial_line_.left(end).toStdString();
    partial_line_.remove(0, end + 1);
    if (line.empty()) continue;
    try {
      const Json j = parse_json_text(line, metrics_path_.toStdString());
      if (!header_seen_) {
        run_header_from_json(j, metrics_path_.toStdString());
        header_seen_ = true;
        continue;
      }
      StepRecord r = step_record_from_json(j, metrics_path_.toStdString());
      loss_chart_->append(static_cast<double>(r.step), r.loss);
      rate_chart_->append(static_cast<double>(r.step), r.tokens_per_s);
      steps_.push_back(std::move(r));
      added = true;
      emit stepMeasured(steps_.back().step);
    } catch (const std::exception& e) {
      appendLog(tr("cannot read a line of run.jsonl: %1").arg(QString::fromUtf8(e.what())));
    }
  }
  if (added) {
    updateComparison();
    if (running()) {
      setStatus(tr("Running: step %1 of %2, loss %3, %4 tokens/s")
                    .arg(steps_.back().step)
                    .arg(steps_spin_->value())
                    .arg(steps_.back().loss, 0, 'f', 4)
                    .arg(steps_.back().tokens_per_s, 0, 'f', 0));
    }
  }
}

void LaunchPanel::updateComparison() {
  comparison_->setRowCount(0);
  if (!running_plan_ || !running_plan_->prediction) return;
  const Prediction& p = *running_plan_->prediction;
  // The first step carries start-up costs; the median of the others is what a run settles at.
  std::vector<const StepRecord*> settled;
  for (const auto& s : steps_)
    settled.push_back(&s);
  if (settled.size() > 1) settled.erase(settled.begin());
  auto measured = [&](auto get) -> QString {
    if (settled.empty()) return QStringLiteral("—");
    std::vector<double> v;
    for (const StepRecord* s : settled)
      v.push_back(get(*s));
    return figure(median(v));
  };
  auto add = [this](const QString& name, const QString& predicted, const QString& measured) {
    const int row = comparison_->rowCount();
    comparison_->insertRow(row);
    comparison_->setItem(row, 0, new QTableWidgetItem(name));
    comparison_->setItem(row, 1, new QTableWidgetItem(predicted));
    comparison_->setItem(row, 2, new QTableWidgetItem(measured));
  };
  add(tr("step time (s)"), figure(p.step_time_s),
      measured([](const StepRecord& s) { return s.step_time_s; }));
  add(tr("tokens/s"), figure(p.tokens_per_s),
      measured([](const StepRecord& s) { return s.tokens_per_s; }));
  // The executor counts model state and activations; the prediction's peak adds communication
  // staging, the runtime reserve and allocator slack: compare the part both count.
  add(tr("state + activations (GiB)"), figure(p.memory.tracked() / kGiB),
      measured([](const StepRecord& s) { return s.peak_memory_bytes / kGiB; }));
  std::vector<std::string> names;
  for (const StepRecord* s : settled) {
    for (const auto& [name, seconds] : s->phases_s) {
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
  }
  for (const std::string& name : names) {
    const auto predicted = phase_seconds(p.time, name);
    add(tr("%1 (s)").arg(QString::fromStdString(name)),
        predicted ? figure(*predicted) : QStringLiteral("—"),
        measured([&name](const StepRecord& s) {
          const auto it = s.phases_s.find(name);
          return it == s.phases_s.end() ? 0.0 : it->second;
        }));
  }
  compare_box_->setTitle(settled.empty() ? tr("Predicted vs measured (per step)")
                         : settled.size() == steps_.size()
                             ? tr("Predicted vs measured (per step; measured: step 1)")
                             : tr("Predicted vs measured (per step; measured: median "
                                  "of steps 2–%1)")
                                   .arg(steps_.size()));
}

void LaunchPanel::calibrate() {
  if (calibrate_process_ != nullptr) return;
  const QString cli = moetune_cli_path();
  if (cli.isEmpty()) {
    const QString why = tr("The moetune command-line tool was not found; set MOETUNE_CLI.");
    setStatus(why);
    emit calibrationUnavailable(why);
    return;
  }
  if (metrics_path_.isEmpty() || steps_.empty() || running()) {
    const QString why = tr("Calibration fits measured steps: finish a run first.");
    setStatus(why);
    emit calibrationUnavailable(why);
    return;
  }
  // Is there a `calibrate` subcommand in this moetune? Its help lists the subcommands.
  calibrate_process_ = new QProcess(this);
  calibrate_process_->setProgram(cli);
  calibrate_process_->setArguments({QStringLiteral("--help")});
  calibrate_process_->setProcessChannelMode(QProcess::MergedChannels);
  connect(calibrate_process_, &QProcess::finished, this, [this, p = calibrate_process_] {
    const QString help = QString::fromLocal8Bit(p->readAll());
    p->deleteLater();
    calibrate_process_ = nullptr;
    if (!help.contains(QRegularExpression(QStringLiteral("^\\s+calibrate\\b"),
                                          QRegularExpression::MultilineOption))) {
      const QString why = tr("This moetune (%1) has no `calibrate` subcommand, so the cluster "
                             "cannot be refitted; build a moetune that has it.")
                              .arg(p->program());
      setStatus(why);
      emit calibrationUnavailable(why);
      return;
    }
    runCalibrate();
  });
  calibrate_process_->start();
  setStatus(tr("Calibrating…"));
}

void LaunchPanel::runCalibrate() {
  const QDir dir(runDir());
  // The base is exactly the cluster the run used, as its plan has it.
  const QString base = dir.filePath(QStringLiteral("cluster-base.json"));
  const QString out = dir.filePath(QStringLiteral("cluster-calibrated.json"));
  try {
    Json j = to_json(running_plan_->cluster);
    write_file_atomically(base.toStdString(), j.dump(2) + "\n");
  } catch (const std::exception& e) {
    setStatus(tr("Cannot write %1: %2").arg(base, QString::fromUtf8(e.what())));
    return;
  }
  calibrate_process_ = new QProcess(this);
  calibrate_process_->setProgram(moetune_cli_path());
  calibrate_process_->setArguments({QStringLiteral("calibrate"), QStringLiteral("--runs"),
                                    metrics_path_, QStringLiteral("--base"), base,
                                    QStringLiteral("--out"), out});
  calibrate_process_->setProcessChannelMode(QProcess::MergedChannels);
  appendLog(QStringLiteral("$ moetune ") + calibrate_process_->arguments().join(QLatin1Char(' ')));
  connect(
      calibrate_process_, &QProcess::finished, this,
      [this, out, p = calibrate_process_](int code, QProcess::ExitStatus st) {
        appendLog(QString::fromLocal8Bit(p->readAll()));
        p->deleteLater();
        calibrate_process_ = nullptr;
        if (st != QProcess::NormalExit || code != 0 || !QFile::exists(out)) {
          const QString why =
              tr("moetune calibrate failed (exit status %1); see the output.").arg(code);
          setStatus(why);
          emit calibrationUnavailable(why);
          return;
        }
        setStatus(tr("Calibrated: %1. The cluster now comes from it; layouts re-ranked.").arg(out));
        emit calibrated(out);
      });
  calibrate_process_->start();
}

}  // namespace moetune::gui
