"""SPIN's HMR regressor in plain PyTorch: the reference for our converter.

An independent PyTorch re-statement of SPIN's hmr.py architecture
(torchvision ResNet key names, the IEF head, SPIN's 6D rotation layout), built
only to produce state dicts with the original key names and reference outputs.
Used by tests/test_convert.py and experiments/benchmarks/regressor.py (which
puts tests/ on sys.path). Torch stays out of the spin_jax library; this module
imports torch at the top, so import it only where torch is installed.
"""
import torch
from torch import nn
import torch.nn.functional as F


class TorchBlock(nn.Module):
  """A torchvision ResNet block: basic (two 3x3) or bottleneck (1-3-1)."""

  def __init__(self, cin, width, stride, bottleneck):
    super().__init__()
    self.bottleneck = bottleneck
    cout = width * (4 if bottleneck else 1)
    if bottleneck:
      self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
      self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
      self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
      self.bn3 = nn.BatchNorm2d(cout)
    else:
      self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
      self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.bn2 = nn.BatchNorm2d(width if bottleneck else cout)
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = nn.Sequential(
          nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.bottleneck:
      y = self.bn3(self.conv3(F.relu(y)))
    skip = x if self.downsample is None else self.downsample(x)
    return F.relu(y + skip)


class TorchHMR(nn.Module):
  """SPIN's HMR: torchvision ResNet + IEF, 6D rotations.

  Args:
    depths: blocks per ResNet stage, e.g. (3, 4, 6, 3) for ResNet-50.
    bottleneck: bottleneck blocks (ResNet-50 and up) or basic ones.
    mean: SPIN's mean parameters (dict with 'pose6d', 'betas', 'cam'), the
      IEF starting point, stored as the buffers init_pose/init_shape/init_cam.

  forward takes NCHW images and returns (rotmat (B, 24, 3, 3), betas, cam).
  """

  def __init__(self, depths, bottleneck, mean):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    cin = 64
    for s, (depth, width) in enumerate(zip(depths, (64, 128, 256, 512))):
      blocks = []
      for i in range(depth):
        blocks.append(TorchBlock(cin, width, 2 if (i == 0 and s) else 1,
                                 bottleneck))
        cin = width * (4 if bottleneck else 1)
      setattr(self, f'layer{s + 1}', nn.Sequential(*blocks))
    self.fc1 = nn.Linear(cin + 157, 1024)
    self.drop1 = nn.Dropout()
    self.fc2 = nn.Linear(1024, 1024)
    self.drop2 = nn.Dropout()
    self.decpose = nn.Linear(1024, 144)
    self.decshape = nn.Linear(1024, 10)
    self.deccam = nn.Linear(1024, 3)
    self.register_buffer('init_pose', torch.tensor(mean['pose6d'])[None])
    self.register_buffer('init_shape', torch.tensor(mean['betas'])[None])
    self.register_buffer('init_cam', torch.tensor(mean['cam'])[None])

  def features(self, x):  # NCHW -> pooled backbone features
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return x.mean(dim=(2, 3))

  def forward(self, x):  # NCHW
    xf = self.features(x)
    b = x.shape[0]
    pose = self.init_pose.expand(b, -1)
    shape = self.init_shape.expand(b, -1)
    cam = self.init_cam.expand(b, -1)
    for _ in range(3):
      xc = torch.cat([xf, pose, shape, cam], 1)
      xc = self.drop2(self.fc2(self.drop1(self.fc1(xc))))
      pose = self.decpose(xc) + pose
      shape = self.decshape(xc) + shape
      cam = self.deccam(xc) + cam
    # SPIN's rot6d_to_rotmat: view(-1, 3, 2), Gram-Schmidt, columns.
    a = pose.reshape(-1, 3, 2)
    b1 = F.normalize(a[:, :, 0], dim=1)
    b2 = F.normalize(a[:, :, 1] - (b1 * a[:, :, 1]).sum(1, keepdim=True) * b1,
                     dim=1)
    rotmat = torch.stack([b1, b2, torch.cross(b1, b2, dim=1)], -1)
    return rotmat.view(b, 24, 3, 3), shape, cam
