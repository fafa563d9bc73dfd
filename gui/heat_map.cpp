// The ep x hs heat map.
#include "gui/heat_map.hpp"

#include <QMouseEvent>
#include <QPainter>

#include <algorithm>
#include <set>

namespace moetune::gui {

HeatGrid make_heat_grid(const std::vector<planner::Candidate>& valid, const Layout& current) {
  HeatGrid g;
  g.tp = current.tp;
  g.pp = current.pp;
  g.vpp = current.vpp;
  std::set<std::int64_t> eps, hss;
  for (const auto& c : valid) {
    if (c.layout.tp != g.tp || c.layout.pp != g.pp || c.layout.vpp != g.vpp) continue;
    eps.insert(c.layout.ep);
    hss.insert(c.layout.hs);
  }
  g.eps.assign(eps.begin(), eps.end());
  g.hss.assign(hss.begin(), hss.end());
  g.cells.assign(g.eps.size() * g.hss.size(), HeatCell{});
  for (const auto& c : valid) {
    const Layout& l = c.layout;
    if (l.tp != g.tp || l.pp != g.pp || l.vpp != g.vpp) continue;
    const auto row = static_cast<std::size_t>(std::lower_bound(g.eps.begin(), g.eps.end(), l.ep) -
                                              g.eps.begin());
    const auto col = static_cast<std::size_t>(std::lower_bound(g.hss.begin(), g.hss.end(), l.hs) -
                                              g.hss.begin());
    HeatCell& cell = g.cells[row * g.hss.size() + col];
    const bool better = !cell.valid || (c.fits && !cell.fits) ||
                        (c.fits == cell.fits && c.tokens_per_s > cell.tokens_per_s);
    if (better) {
      cell.valid = true;
      cell.fits = c.fits;
      cell.tokens_per_s = c.tokens_per_s;
      cell.best = l;
    }
  }
  return g;
}

HeatMap::HeatMap(QWidget* parent) : QWidget(parent) {
  setMinimumSize(300, 240);
  setMouseTracking(false);
}

void HeatMap::setGrid(HeatGrid grid) {
  grid_ = std::move(grid);
  update();
}

void HeatMap::setSelected(std::int64_t ep, std::int64_t hs) {
  selected_ep_ = ep;
  selected_hs_ = hs;
  update();
}

QRectF HeatMap::gridRect() const {
  return QRectF(90, 56, std::max(10, width() - 90 - 150), std::max(10, height() - 56 - 60));
}

QRectF HeatMap::cellRect(std::size_t row, std::size_t column) const {
  const QRectF g = gridRect();
  const double w = g.width() / static_cast<double>(std::max<std::size_t>(1, grid_.hss.size()));
  const double h = g.height() / static_cast<double>(std::max<std::size_t>(1, grid_.eps.size()));
  return QRectF(g.left() + w * static_cast<double>(column), g.top() + h * static_cast<double>(row),
                w, h);
}

namespace {

// Light yellow (slow) to dark blue (fast).
QColor ramp(double t) {
  t = std::clamp(t, 0.0, 1.0);
  const QColor a(255, 247, 188), b(65, 182, 196), c(8, 48, 107);
  auto mix = [](const QColor& x, const QColor& y, double s) {
    return QColor::fromRgbF(static_cast<float>(x.redF() + (y.redF() - x.redF()) * s),
                            static_cast<float>(x.greenF() + (y.greenF() - x.greenF()) * s),
                            static_cast<float>(x.blueF() + (y.blueF() - x.blueF()) * s));
  };
  return t < 0.5 ? mix(a, b, t * 2) : mix(b, c, (t - 0.5) * 2);
}

}  // namespace

void HeatMap::paintEvent(QPaintEvent*) {
  QPainter p(this);
  p.setRenderHint(QPainter::Antialiasing);
  p.fillRect(rect(), palette().base());
  QFont title_font = font();
  title_font.setBold(true);
  title_font.setPointSizeF(font().pointSizeF() * 1.15);
  p.setFont(title_font);
  p.drawText(QRectF(0, 8, width(), 24), Qt::AlignHCenter,
             tr("Tokens/s by ep (rows) and hs (columns) at tp=%1, pp=%2%3")
                 .arg(grid_.tp)
                 .arg(grid_.pp)
                 .arg(grid_.vpp > 1 ? QStringLiteral("x%1").arg(grid_.vpp) : QString()));
  QFont cell_font = font();
  cell_font.setPointSizeF(font().pointSizeF() * 1.2);
  p.setFont(cell_font);
  if (grid_.eps.empty()) {
    p.drawText(rect(), Qt::AlignCenter, tr("No valid layouts"));
    return;
  }
  double max_tps = 0, min_tps = 1e300;
  for (const HeatCell& c : grid_.cells) {
    if (!c.valid || !c.fits) continue;
    max_tps = std::max(max_tps, c.tokens_per_s);
    min_tps = std::min(min_tps, c.tokens_per_s);
  }
  const QRectF g = gridRect();
  for (std::size_t r = 0; r < grid_.eps.size(); ++r) {
    p.setPen(palette().text().color());
    p.drawText(QRectF(0, cellRect(r, 0).top(), g.left() - 8, cellRect(r, 0).height()),
               Qt::AlignRight | Qt::AlignVCenter, QStringLiteral("ep %1").arg(grid_.eps[r]));
    for (std::size_t col = 0; col < grid_.hss.size(); ++col) {
      const QRectF cell = cellRect(r, col).adjusted(1, 1, -1, -1);
      const HeatCell& c = grid_.at(r, col);
      if (!c.valid) {
        p.fillRect(cell, QColor(238, 238, 238));
        p.setPen(QColor(150, 150, 150));
        p.drawText(cell, Qt::AlignCenter, QStringLiteral("—"));
        continue;
      }
      if (c.fits) {
        const double t = max_tps > min_tps ? (c.tokens_per_s - min_tps) / (max_tps - min_tps) : 1.0;
        const QColor color = ramp(0.15 + 0.85 * t);
        p.fillRect(cell, color);
        p.setPen(color.lightness() < 128 ? Qt::white : Qt::black);
        p.drawText(cell, Qt::AlignCenter, QString::number(c.tokens_per_s, 'f', 0));
      } else {
        p.fillRect(cell, QColor(255, 225, 225));
        p.fillRect(cell, QBrush(QColor(214, 39, 40, 110), Qt::BDiagPattern));
        p.setPen(QColor(150, 20, 20));
        p.drawText(cell, Qt::AlignCenter,
                   tr("%1\ndoes not fit").arg(QString::number(c.tokens_per_s, 'f', 0)));
      }
      if (grid_.eps[r] == selected_ep_ && grid_.hss[col] == selected_hs_) {
        p.setPen(QPen(Qt::black, 3));
        p.setBrush(Qt::NoBrush);
        p.drawRect(cell.adjusted(1, 1, -1, -1));
      }
    }
  }
  p.setPen(palette().text().color());
  p.setFont(font());
  for (std::size_t col = 0; col < grid_.hss.size(); ++col) {
    const QRectF c = cellRect(grid_.eps.size() - 1, col);
    p.drawText(QRectF(c.left(), g.bottom() + 4, c.width(), 20), Qt::AlignCenter,
               QStringLiteral("hs %1").arg(grid_.hss[col]));
  }
  // Legend: colour ramp, hatched "does not fit", blank "no valid layout".
  const QRectF legend(g.right() + 20, g.top(), 110, 16);
  for (int i = 0; i < 100; ++i) {
    p.fillRect(QRectF(legend.left() + i * 1.1, legend.top(), 1.2, legend.height()),
               ramp(0.15 + 0.85 * i / 99.0));
  }
  p.drawText(QRectF(legend.left(), legend.bottom() + 2, 110, 18), Qt::AlignLeft,
             QString::number(max_tps > 0 ? min_tps : 0, 'f', 0));
  p.drawText(QRectF(legend.left(), legend.bottom() + 2, 110, 18), Qt::AlignRight,
             QString::number(max_tps, 'f', 0));
  const QRectF hatch(legend.left(), legend.bottom() + 30, 24, 16);
  p.fillRect(hatch, QColor(255, 225, 225));
  p.fillRect(hatch, QBrush(QColor(214, 39, 40, 110), Qt::BDiagPattern));
  p.drawText(QRectF(hatch.right() + 6, hatch.top(), 90, 18), Qt::AlignLeft | Qt::AlignVCenter,
             tr("does not fit"));
  const QRectF blank(legend.left(), hatch.bottom() + 10, 24, 16);
  p.fillRect(blank, QColor(238, 238, 238));
  p.drawText(QRectF(blank.right() + 6, blank.top(), 90, 18), Qt::AlignLeft | Qt::AlignVCenter,
             tr("no valid layout"));
  p.drawText(QRectF(legend.left(), blank.bottom() + 10, 130, 60), Qt::AlignLeft | Qt::TextWordWrap,
             tr("Each cell: the best layout with that ep and hs. Click to select."));
}

void HeatMap::mousePressEvent(QMouseEvent* event) {
  for (std::size_t r = 0; r < grid_.eps.size(); ++r) {
    for (std::size_t c = 0; c < grid_.hss.size(); ++c) {
      if (cellRect(r, c).contains(event->position()) && grid_.at(r, c).valid) {
        emit layoutClicked(grid_.at(r, c).best);
        return;
      }
    }
  }
}

}  // namespace moetune::gui
