// Heat map of tokens/s over expert-parallel (rows) and hybrid-shard (columns) degrees, for the
// selected layout's tp, pp and vpp: each cell shows the best layout with that ep and hs; cells
// where nothing fits are hatched, cells no valid layout reaches are blank. Click a cell to select
// its layout.
#pragma once

#include <QWidget>

#include <vector>

#include "planner/planner.hpp"

namespace moetune::gui {

struct HeatCell {
  bool valid = false;  // some valid layout has this ep and hs
  bool fits = false;   // and one of them fits
  double tokens_per_s = 0;
  Layout best;  // the best fitting layout, else the best non-fitting one
};

struct HeatGrid {
  std::vector<std::int64_t> eps, hss;  // row and column values
  std::vector<HeatCell> cells;         // [row * hss.size() + column]
  std::int64_t tp = 1, pp = 1, vpp = 1;
  const HeatCell& at(std::size_t row, std::size_t column) const {
    return cells[row * hss.size() + column];
  }
};

// The grid for the candidates that share `current`'s tp, pp and vpp.
HeatGrid make_heat_grid(const std::vector<planner::Candidate>& valid, const Layout& current);

class HeatMap : public QWidget {
  Q_OBJECT

 public:
  explicit HeatMap(QWidget* parent = nullptr);
  void setGrid(HeatGrid grid);
  void setSelected(std::int64_t ep, std::int64_t hs);
  const HeatGrid& grid() const { return grid_; }
  QPoint cellCenter(std::size_t row, std::size_t column) const {
    return cellRect(row, column).center().toPoint();
  }

 signals:
  void layoutClicked(const moetune::Layout& layout);

 protected:
  void paintEvent(QPaintEvent* event) override;
  void mousePressEvent(QMouseEvent* event) override;

 private:
  QRectF cellRect(std::size_t row, std::size_t column) const;
  QRectF gridRect() const;
  HeatGrid grid_;
  std::int64_t selected_ep_ = 0, selected_hs_ = 0;
};

}  // namespace moetune::gui
