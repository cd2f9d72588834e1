# GPU-sized synth_rm run (one H100/H200-class GPU, 16 CPU cores):
#   recipes/synth_rm/run.sh --conf recipes/synth_rm/conf/gpu.sh
# The corpus, the teachers and the epochs scale up; the student stays >= 4x smaller than the smallest
# teacher (tdnn student-xl 4.3M parameters against 30M and more), and every student configuration has 5 seeds.
hours=60
nj=16
jobs=1             # one model at a time on the one GPU
teachers="conformer:teacher-xl:1 tdnn:teacher-xl:2 blstm:teacher-xl:3 tdnn:teacher-xl:4"
teacher_epochs=20
spec_augment=true
student="tdnn:student-xl"
student_seeds="7 8 9 10 11"
fractions="1:80 3:60 10:40 30:25 100:20"
sweep_temperatures="1 4 8"
sweep_seeds="7 8 9"
max_duration=1000
lr=1e-3
warmup_steps=500
device=cuda
num_workers=8
