"""G that can only draw pen strokes (docs/heldout.md, round 2, candidates 3 and 4): an MLP and a soft renderer."""
import torch
import torch.nn as nn

from attacklab.data import N_CLASSES


class StrokeGenerator(nn.Module):
    """G(z, y) that can only draw pen strokes: k cubic Bezier curves, rendered as a soft distance field.

    An MLP maps (z, y) to each stroke's four control points (pixels, inside [2, 25]), half-width and ink;
    the image is the soft union of the strokes. It cannot draw a texture, a speckle or a filled blob wider
    than its widest pen (docs/heldout.md, round 2, candidate 3). Same interface as Generator.
    """

    def __init__(self, input_dim=100, n_classes=N_CLASSES, strokes=4, hidden=256, samples=16,
                 half_width=(0.75, 2.0), edge=0.5):
        super().__init__()
        self.strokes, self.half_width, self.edge = strokes, half_width, edge
        self.net = nn.Sequential(
            nn.Linear(input_dim + n_classes, hidden), nn.LeakyReLU(0.2, inplace=True),  # (hidden,)
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2, inplace=True),  # (hidden,)
            nn.Linear(hidden, strokes * 10),  # per stroke: 4 control points (x, y), half-width, ink
        )
        with torch.no_grad():  # strokes start as different curves spread over the image, not dots at its centre
            self.net[-1].bias.view(strokes, 10)[:, :8].normal_(0.0, 1.5)
        t = torch.linspace(0, 1, samples)
        bernstein = torch.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3], 1)  # (T, 4)
        self.register_buffer("bernstein", bernstein, persistent=False)
        ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
        self.register_buffer("pixels", torch.stack([xs, ys], -1).view(-1, 2), persistent=False)  # (784, 2)

    def forward(self, z, y_onehot):
        p = self.net(torch.cat([z.flatten(1), y_onehot.flatten(1)], 1)).view(-1, self.strokes, 10)  # (k, 10)
        points = 2 + 23 * torch.sigmoid(p[..., :8]).view(-1, self.strokes, 4, 2)  # (k, 4, 2) pixel coordinates
        lo, hi = self.half_width
        half_width = lo + (hi - lo) * torch.sigmoid(p[..., 8])  # (k,)
        ink = torch.sigmoid(p[..., 9])  # (k,)
        return render_strokes(self.bernstein @ points, half_width, ink, self.pixels, self.edge)


def render_strokes(curves, half_width, ink, pixels, edge):
    """Polylines (n, k, T, 2) with half-widths and inks (n, k) -> images (n, 1, 28, 28) in [-1, 1].

    Each pixel's distance to each polyline, through a sigmoid of width `edge` px at the half-width, times
    the ink; strokes combine as a soft union, 1 - prod(1 - stroke).
    """
    a, ab = curves[:, :, :-1, None, :], curves[:, :, 1:, None, :] - curves[:, :, :-1, None, :]  # (n, k, T-1, 1, 2)
    apx, apy = pixels[:, 0] - a[..., 0], pixels[:, 1] - a[..., 1]  # (n, k, T-1, 784) pixel minus segment start
    abx, aby = ab[..., 0], ab[..., 1]  # (n, k, T-1, 1)
    t = ((apx * abx + apy * aby) / (abx * abx + aby * aby).clamp(min=1e-6)).clamp(0, 1)  # (n, k, T-1, 784)
    d2 = ((apx - t * abx).square() + (apy - t * aby).square()).amin(2)  # (n, k, 784) squared distance to each stroke
    stroke = ink[..., None] * torch.sigmoid((half_width[..., None] - (d2 + 1e-6).sqrt()) / edge)  # (n, k, 784)
    image = 1 - (1 - stroke).prod(1)  # (n, 784)
    return (2 * image - 1).view(-1, 1, 28, 28)
