"""PyTorch baseline for `npm run bench`: nn.Linear trained on cached-feature-shaped data, as the seeds train `fc`."""
import json, sys, time

import torch

rows, dim, classes, epochs, batch = (int(a) for a in sys.argv[1:6])
torch.manual_seed(0)
torch.set_num_threads(int(sys.argv[6]) if len(sys.argv) > 6 else 2)
centres = torch.rand(classes, dim) * 2 - 1
y = torch.randint(0, classes, (rows,))
x = centres[y] + (torch.rand(rows, dim) * 2 - 1) * 3
model = torch.nn.Linear(dim, classes)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = torch.nn.CrossEntropyLoss()
times = []
for _ in range(epochs):
    start = time.perf_counter()
    perm = torch.randperm(rows)
    for s in range(0, rows, batch):
        idx = perm[s:s + batch]
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    times.append(time.perf_counter() - start)
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "secondsPerEpoch": sum(times) / len(times)}))
