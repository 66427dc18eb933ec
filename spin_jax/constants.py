"""Constants of the original SPIN release: camera, joint sets, index maps, flips.

Numbers come from SPIN's published configuration (see README, "Where we differ").
Index tables are plain tuples so they can be used as static values under jit.
"""

# Crop camera used by SMPLify, the losses and the evaluation.
FOCAL_LENGTH = 5000.0
IMG_RES = 224
IMG_NORM_MEAN = (0.485, 0.456, 0.406)
IMG_NORM_STD = (0.229, 0.224, 0.225)
# A box "scale" is its side in original-image pixels divided by this.
BOX_SCALE_UNIT = 200.0

NUM_SMPL_JOINTS = 24
NUM_BODY_JOINTS = 23
NUM_BETAS = 10
NUM_JOINTS = 49  # SPIN's superset: 25 OpenPose + 24 ground-truth joints.
NUM_GT_JOINTS = 24
NUM_OPENPOSE_JOINTS = 25

SMPL_JOINT_NAMES = (
    'pelvis', 'left_hip', 'right_hip', 'spine1', 'left_knee', 'right_knee',
    'spine2', 'left_ankle', 'right_ankle', 'spine3', 'left_foot', 'right_foot',
    'neck', 'left_collar', 'right_collar', 'head', 'left_shoulder',
    'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist',
    'left_hand', 'right_hand')
# Kinematic tree of SMPL: parent of each joint (-1 for the root).
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16,
                17, 18, 19, 20, 21)

OPENPOSE_JOINT_NAMES = (
    'OP Nose', 'OP Neck', 'OP RShoulder', 'OP RElbow', 'OP RWrist',
    'OP LShoulder', 'OP LElbow', 'OP LWrist', 'OP MidHip', 'OP RHip', 'OP RKnee',
    'OP RAnkle', 'OP LHip', 'OP LKnee', 'OP LAnkle', 'OP REye', 'OP LEye',
    'OP REar', 'OP LEar', 'OP LBigToe', 'OP LSmallToe', 'OP LHeel',
    'OP RBigToe', 'OP RSmallToe', 'OP RHeel')
GT_JOINT_NAMES = (
    'Right Ankle', 'Right Knee', 'Right Hip', 'Left Hip', 'Left Knee',
    'Left Ankle', 'Right Wrist', 'Right Elbow', 'Right Shoulder',
    'Left Shoulder', 'Left Elbow', 'Left Wrist', 'Neck (LSP)', 'Top of Head (LSP)',
    'Pelvis (MPII)', 'Thorax (MPII)', 'Spine (H36M)', 'Jaw (H36M)', 'Head (H36M)',
    'Nose', 'Left Eye', 'Right Eye', 'Left Ear', 'Right Ear')
JOINT_NAMES = OPENPOSE_JOINT_NAMES + GT_JOINT_NAMES  # the 49 joints

# The body model yields 54 candidate points: 24 SMPL joints (0-23), 11 surface
# keypoints (24-34, vertex ids below), 10 fingertips (35-44, unused by SPIN)
# and 9 J_regressor_extra joints (45-53). The 49 outputs pick, in order:
JOINTS_49_FROM_54 = (
    24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28, 29, 30,
    31, 32, 33, 34, 8, 5, 45, 46, 4, 7, 21, 19, 17, 16, 18, 20, 47, 48, 49, 50,
    51, 52, 53, 24, 26, 25, 28, 27)
KEYPOINT_VERTEX_NAMES = ('nose', 'reye', 'leye', 'rear', 'lear', 'LBigToe',
                         'LSmallToe', 'LHeel', 'RBigToe', 'RSmallToe', 'RHeel')
# Vertex ids of those keypoints on the SMPL topology (6890 vertices) only: a
# body model of another topology supplies its own (BodyModel.keypoint_vertex_ids).
SMPL_KEYPOINT_VERTEX_IDS = (332, 6260, 2800, 4071, 583, 3216, 3226, 3387, 6617,
                            6624, 6787)
NUM_EXTRA_JOINTS = 9  # rows of J_regressor_extra, candidates 45-53
EXTRA_JOINT_NAMES = ('Right Hip', 'Left Hip', 'Neck (LSP)', 'Top of Head (LSP)',
                     'Pelvis (MPII)', 'Thorax (MPII)', 'Spine (H36M)',
                     'Jaw (H36M)', 'Head (H36M)')
NUM_H36M_JOINTS = 17

# Horizontal flips.
SMPL_JOINTS_FLIP_PERM = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15,
                         17, 16, 19, 18, 21, 20, 23, 22)
SMPL_POSE_FLIP_PERM = tuple(3 * i + k for i in SMPL_JOINTS_FLIP_PERM
                            for k in range(3))
J24_FLIP_PERM = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 15, 16, 17,
                 18, 19, 21, 20, 23, 22)
J49_FLIP_PERM = (0, 1, 5, 6, 7, 2, 3, 4, 8, 12, 13, 14, 9, 10, 11, 16, 15, 18,
                 17, 22, 23, 24, 19, 20, 21) + tuple(25 + i for i in J24_FLIP_PERM)

# Evaluation: the 17 H36M-regressor joints to the 17 / 14 evaluated joints.
H36M_TO_J17 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9)
H36M_TO_J14 = H36M_TO_J17[:14]
# The 24 GT joints to the same 17 / 14.
J24_TO_J17 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 14, 16, 17)
J24_TO_J14 = J24_TO_J17[:14]

# SMPLify.
SMPLIFY_IGNORED_JOINTS = ('OP Neck', 'OP RHip', 'OP LHip', 'Right Hip', 'Left Hip')
SMPLIFY_IGNORED_JOINT_IDS = (1, 9, 12, 27, 28)
# Stage 1 (camera) uses hips and shoulders: OpenPose ones when all four are
# confident, otherwise the ground-truth ones.
OP_TORSO_JOINT_IDS = (9, 12, 2, 5)     # RHip, LHip, RShoulder, LShoulder
GT_TORSO_JOINT_IDS = (27, 28, 33, 34)  # Right Hip, Left Hip, R/L Shoulder
SMPLIFY_SIGMA = 100.0
SMPLIFY_POSE_PRIOR_WEIGHT = 4.78
SMPLIFY_ANGLE_PRIOR_WEIGHT = 15.2
SMPLIFY_SHAPE_PRIOR_WEIGHT = 5.0
SMPLIFY_DEPTH_LOSS_WEIGHT = 100.0
# Elbows and knees in the 69-D body pose, and the sign that makes bending the
# unnatural way expensive.
ANGLE_PRIOR_POSE_IDS = (52, 55, 9, 12)
ANGLE_PRIOR_SIGNS = (1.0, -1.0, -1.0, -1.0)
# A fit supervises the network when its mean per-joint reprojection loss is
# below this (pixels of the 224 crop, GMoF sigma 100, see fits.py).
FIT_VALIDITY_THRESHOLD = 100.0
# Betas with any |beta| above this are replaced by zeros for supervision.
BETAS_SUPERVISION_LIMIT = 3.0

# Datasets (names as in SPIN's fits files) and their share of a batch.
TRAIN_DATASETS = ('h36m', 'lsp-orig', 'mpii', 'lspet', 'coco', 'mpi-inf-3dhp')
# H36M 0.3, 3DHP 0.1, the four in-the-wild sets share 0.6 by size.
H36M_SHARE = 0.3
MPI_INF_3DHP_SHARE = 0.1
ITW_SHARE = 0.6

# Training defaults (paper setting).
LEARNING_RATE = 5e-5
BATCH_SIZE = 64
NUM_EPOCHS = 50
# total = overall * (vertices*L_v + keypoints_2d*L_2d + keypoints_3d*L_3d
#                    + pose*L_pose + betas*L_betas + cam*L_cam)
LOSS_WEIGHTS = dict(vertices=0.0, keypoints_2d=5.0, keypoints_3d=5.0, pose=1.0,
                    betas=0.001, cam=1.0, overall=60.0)
# Per-joint weights of the 2D loss: OpenPose joints and ground-truth joints.
OPENPOSE_KEYPOINT_WEIGHT = 0.0
GT_KEYPOINT_WEIGHT = 1.0
