# GPU-sized synth_digits run (one H100-class GPU, 16 CPU cores):
#   recipes/synth_digits/run.sh --conf recipes/synth_digits/conf/gpu.sh
hours=100
nj=16
teachers="conformer:teacher-xl:1 tdnn:teacher-xl:2 blstm:teacher-xl:3 dnn:teacher-xl:4"
teacher_epochs=20
student="tdnn:student-xl"
student_seeds="7 8 9 10 11"
fractions="1:80 3:60 10:40 30:25 100:20"  # percent of the labeled training cuts : epochs
max_duration=1000
device=cuda
num_workers=8
