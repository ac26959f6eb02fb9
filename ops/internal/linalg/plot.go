package linalg

import (
	"errors"
	"fmt"
	"image"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// EnergySeries is one line of an energy plot: Energy[r-1] is the share of
// energy captured at rank r, as returned by EnergyCurve.
type EnergySeries struct {
	Name   string
	Energy []float64
}

// PlotOptions sets up PlotEnergy. The zero value gives an untitled
// 900×560-pixel plot without a rank marker.
type PlotOptions struct {
	Title           string
	Width, Height   int // pixels; 0 selects 900×560
	MarkRank        int // if > 0, a dashed vertical line at this rank (e.g. the extraction rank)
	MaxLegendSeries int // legend only up to this many series; 0 selects 16
}

// PlotEnergy writes a PNG of energy captured against rank to w, one line
// per series (per module or per module type), x from rank 1, y in [0, 1].
// Colors and dash patterns cycle with the series index. It fails if there
// is no series or a series holds a value outside [0, 1] (NaN included),
// and passes on w's errors. The output depends only on the arguments.
func PlotEnergy(w io.Writer, series []EnergySeries, opts PlotOptions) error {
	if len(series) == 0 {
		return errors.New("linalg: PlotEnergy: no series")
	}
	width, height := opts.Width, opts.Height
	if width <= 0 || height <= 0 {
		width, height = 900, 560
	}
	maxLegend := opts.MaxLegendSeries
	if maxLegend == 0 {
		maxLegend = 16
	}
	p := plot.New()
	p.Title.Text = opts.Title
	p.X.Label.Text = "rank"
	p.Y.Label.Text = "energy captured"
	p.Y.Min, p.Y.Max = 0, 1
	p.X.Min = 1
	p.Add(plotter.NewGrid())
	p.Legend.Top = false
	p.Legend.Left = false
	maxRank := 1
	for i, s := range series {
		xys := make(plotter.XYs, len(s.Energy))
		for r, e := range s.Energy {
			if !(e >= 0 && e <= 1) {
				return fmt.Errorf("linalg: PlotEnergy: series %q: energy %v at rank %d outside [0, 1]", s.Name, e, r+1)
			}
			xys[r] = plotter.XY{X: float64(r + 1), Y: e}
		}
		maxRank = max(maxRank, len(s.Energy))
		line, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("linalg: PlotEnergy: series %q: %w", s.Name, err)
		}
		line.Color = plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i / len(plotutil.DefaultColors))
		line.Width = vg.Points(1.5)
		if len(series) > maxLegend {
			line.Width = vg.Points(0.75)
		}
		p.Add(line)
		if len(series) <= maxLegend {
			p.Legend.Add(s.Name, line)
		}
	}
	p.X.Max = math.Max(float64(maxRank), 2)
	if opts.MarkRank > 0 {
		mark, err := plotter.NewLine(plotter.XYs{{X: float64(opts.MarkRank), Y: 0}, {X: float64(opts.MarkRank), Y: 1}})
		if err != nil {
			return err
		}
		mark.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		mark.Color = plotutil.DarkColors[0]
		p.Add(mark)
		p.Legend.Add(fmt.Sprintf("rank %d", opts.MarkRank), mark)
		p.X.Max = math.Max(p.X.Max, float64(opts.MarkRank))
	}
	c := vgimg.NewWith(vgimg.UseImage(image.NewRGBA(image.Rect(0, 0, width, height))))
	p.Draw(draw.New(c))
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(w); err != nil {
		return fmt.Errorf("linalg: PlotEnergy: %w", err)
	}
	return nil
}
