// Where moetune-gui finds the `moetune` command-line tool it starts for training and calibration.
#pragma once

#include <QString>

namespace moetune::gui {

// $MOETUNE_CLI when set, else `moetune` next to this executable, else ../cli/moetune (the build
// tree), else the path this build was configured with. Empty when none of them exists.
QString moetune_cli_path();

}  // namespace moetune::gui
