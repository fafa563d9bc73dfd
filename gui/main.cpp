// moetune-gui: choose a parallel layout interactively and launch its training.
// `moetune-gui --screenshot FILE [--plan plan.json] [--view NAME]` renders the window to a PNG.
#include <QApplication>
#include <QCommandLineParser>
#include <QTimer>

#include <QHash>
#include <QImage>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "gui/launch_panel.hpp"
#include "gui/main_window.hpp"
#include "gui/setup_panel.hpp"

namespace {

// Screenshots go into the docs: 256 colours and full compression keep them small. The palette is
// the image's 256 most frequent colours (the UI's own, exactly); the rest, mostly antialiased
// edges, take the nearest of them. Qt's own conversion snaps to a fixed colour cube instead, which
// turns pale fills grey.
QImage to_palette(const QImage& shot) {
  const QImage rgb = shot.convertToFormat(QImage::Format_RGB32);
  QHash<QRgb, qint64> counts;
  for (int y = 0; y < rgb.height(); ++y) {
    const auto* line = reinterpret_cast<const QRgb*>(rgb.constScanLine(y));
    for (int x = 0; x < rgb.width(); ++x)
      ++counts[line[x]];
  }
  std::vector<std::pair<qint64, QRgb>> by_count;
  by_count.reserve(static_cast<std::size_t>(counts.size()));
  for (auto it = counts.cbegin(); it != counts.cend(); ++it)
    by_count.emplace_back(it.value(), it.key());
  std::sort(by_count.begin(), by_count.end(), std::greater<>());
  QList<QRgb> table;
  for (std::size_t i = 0; i < std::min<std::size_t>(256, by_count.size()); ++i) {
    table.append(by_count[i].second);
  }
  QHash<QRgb, uchar> index;
  auto nearest = [&table](QRgb c) {
    int best = 0;
    long best_d = -1;
    for (int i = 0; i < static_cast<int>(table.size()); ++i) {
      const long dr = qRed(c) - qRed(table[i]), dg = qGreen(c) - qGreen(table[i]),
                 db = qBlue(c) - qBlue(table[i]);
      const long d = dr * dr + dg * dg + db * db;
      if (best_d < 0 || d < best_d) {
        best_d = d;
        best = i;
      }
    }
    return static_cast<uchar>(best);
  };
  QImage out(rgb.size(), QImage::Format_Indexed8);
  out.setColorTable(table);
  for (int y = 0; y < rgb.height(); ++y) {
    const auto* line = reinterpret_cast<const QRgb*>(rgb.constScanLine(y));
    uchar* dst = out.scanLine(y);
    for (int x = 0; x < rgb.width(); ++x) {
      auto it = index.constFind(line[x]);
      if (it == index.cend()) it = index.insert(line[x], nearest(line[x]));
      dst[x] = it.value();
    }
  }
  return out;
}

// Waits until the planner is idle (and an optional training run has ended), then saves the
// window as a PNG and quits.
void take_screenshot(moetune::gui::MainWindow& window, const QString& file, const QString& view,
                     int train_steps) {
  auto* session = window.session();
  auto done = std::make_shared<bool>(false);
  auto grab = [&window, file, view, done] {
    if (*done) return;
    *done = true;
    window.showView(view);
    QTimer::singleShot(300, &window, [&window, file] {
      const bool ok = to_palette(window.grab().toImage()).save(file, "PNG", 0);
      if (!ok) std::fprintf(stderr, "moetune-gui: error: cannot write %s\n", qPrintable(file));
      QApplication::exit(ok ? 0 : 1);
    });
  };
  auto started = std::make_shared<bool>(false);
  QObject::connect(session, &moetune::gui::PlannerSession::idle, &window,
                   [&window, grab, train_steps, started] {
                     if (train_steps <= 0) {
                       grab();
                       return;
                     }
                     if (*started) return;
                     *started = true;
                     auto* launch = window.launchPanel();
                     launch->setSteps(train_steps);
                     QObject::connect(launch, &moetune::gui::LaunchPanel::runFinished, &window,
                                      [grab](int) { QTimer::singleShot(500, grab); });
                     window.showView(QStringLiteral("launch"));
                     launch->start();
                   });
  QObject::connect(&window, &moetune::gui::MainWindow::errorShown, &window,
                   [](const QString& message) {
                     std::fprintf(stderr, "moetune-gui: error: %s\n", qPrintable(message));
                     // Queued: the error may come before the event loop runs.
                     QTimer::singleShot(0, [] { QApplication::exit(2); });
                   });
}

}  // namespace

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName(QStringLiteral("moetune-gui"));
  QApplication::setApplicationVersion(QStringLiteral("0.1.0"));
  QCommandLineParser parser;
  parser.setApplicationDescription(
      QStringLiteral("Choose expert-parallel, shard and tensor degrees for MoE training and "
                     "launch it."));
  parser.addHelpOption();
  parser.addVersionOption();
  const QCommandLineOption plan(QStringLiteral("plan"), "open this plan.json", "FILE");
  const QCommandLineOption model(QStringLiteral("model"), "model preset or config.json", "SPEC");
  const QCommandLineOption cluster(QStringLiteral("cluster"), "cluster preset or JSON", "SPEC");
  const QCommandLineOption nodes(QStringLiteral("nodes"), "number of nodes", "N");
  const QCommandLineOption devices(QStringLiteral("devices-per-node"), "devices per node", "N");
  const QCommandLineOption seq(QStringLiteral("seq"), "sequence length", "N");
  const QCommandLineOption batch(QStringLiteral("global-batch"), "sequences per optimizer step",
                                 "N");
  const QCommandLineOption screenshot(QStringLiteral("screenshot"),
                                      "render the window to this PNG and quit", "FILE");
  const QCommandLineOption view(
      QStringLiteral("view"),
      "tab for --screenshot: " + moetune::gui::MainWindow::viewNames().join(", "), "NAME",
      QStringLiteral("layouts"));
  const QCommandLineOption train(QStringLiteral("train-steps"),
                                 "with --screenshot: first train the selected plan this many "
                                 "steps on the local launcher",
                                 "N", QStringLiteral("0"));
  parser.addOptions({plan, model, cluster, nodes, devices, seq, batch, screenshot, view, train});
  parser.process(app);
  if (!moetune::gui::MainWindow::viewNames().contains(parser.value(view))) {
    std::fprintf(stderr, "moetune-gui: error: --view must be one of %s\n",
                 qPrintable(moetune::gui::MainWindow::viewNames().join(", ")));
    return 2;
  }
  auto number = [&parser](const QCommandLineOption& o, int& out) {
    if (!parser.isSet(o)) return true;
    bool ok = false;
    out = parser.value(o).toInt(&ok);
    if (!ok || out < 1) {
      std::fprintf(stderr, "moetune-gui: error: --%s must be a whole number, at least 1\n",
                   qPrintable(o.names().first()));
      return false;
    }
    return true;
  };
  int n_nodes = 0, n_devices = 0, n_seq = 0, n_batch = 0;
  const int train_steps = parser.value(train).toInt();
  if (!number(nodes, n_nodes) || !number(devices, n_devices) || !number(seq, n_seq) ||
      !number(batch, n_batch) || train_steps < 0) {
    return 2;
  }

  moetune::gui::MainWindow window;
  window.resize(1600, 1000);
  auto* setup = window.setupPanel();
  {
    const QSignalBlocker block(setup);
    if (parser.isSet(model)) setup->setModelSource(parser.value(model));
    if (parser.isSet(cluster)) setup->setClusterSource(parser.value(cluster));
    if (n_nodes > 0) setup->setNodes(n_nodes);
    if (n_devices > 0) setup->setDevicesPerNode(n_devices);
    if (n_seq > 0 || n_batch > 0)
      setup->setSequence(n_seq > 0 ? n_seq : 2048, n_batch > 0 ? n_batch : 128);
  }
  if (parser.isSet(screenshot)) {
    take_screenshot(window, parser.value(screenshot), parser.value(view), train_steps);
  }
  window.show();
  if (parser.isSet(plan)) {
    if (!window.openPlan(parser.value(plan)) && parser.isSet(screenshot)) return 2;
  } else {
    window.replan();
  }
  return QApplication::exec();
}
