// Locating the moetune CLI.
#include "gui/app_paths.hpp"

#include <QCoreApplication>
#include <QDir>
#include <QFileInfo>

namespace moetune::gui {

QString moetune_cli_path() {
  const QString env = qEnvironmentVariable("MOETUNE_CLI");
  if (!env.isEmpty()) return env;
  const QDir here(QCoreApplication::applicationDirPath());
  for (const QString& candidate : {here.filePath("moetune"), here.filePath("../cli/moetune"),
                                   QString(MOETUNE_CLI_BUILD_PATH)}) {
    const QFileInfo info(candidate);
    if (info.isFile() && info.isExecutable()) return info.canonicalFilePath();
  }
  return {};
}

}  // namespace moetune::gui
