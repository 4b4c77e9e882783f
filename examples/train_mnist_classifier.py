"""Train the small digit classifier that ncml ships as a feature extractor for Fréchet distances.

    python examples/train_mnist_classifier.py --out ncml/evaluation/weights/mnist_classifier

Data: the bundled MNIST-5k train split (4,500 digits; ``ncml.data.load_dataset``), with random shifts of up
to 2 pixels as augmentation. A fixed number of epochs, no model selection on the test split within a run: the
500 test digits are scored once, at the end, and their accuracy goes into ``metrics.json`` next to the weights.
CPU, about a minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ncml.data import load_dataset, to_model_space
from ncml.evaluation.fid import DigitClassifier, DigitClassifierConfig


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in each direction, filling with the background (−1)."""
    b, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


@torch.no_grad()
def accuracy(model: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
    return (pred == y).double().mean().item()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="ncml/evaluation/weights/mnist_classifier")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    train_images, train_labels = load_dataset("mnist5k", "train")
    test_images, test_labels = load_dataset("mnist5k", "test")
    x_train, y_train = to_model_space(train_images), torch.from_numpy(train_labels)
    x_test, y_test = to_model_space(test_images), torch.from_numpy(test_labels)

    model = DigitClassifier(DigitClassifierConfig())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = args.epochs * ((len(x_train) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    start = time.time()
    bar = tqdm(total=steps, desc="training")
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            loss = F.cross_entropy(model(random_shift(x_train[idx], 2, gen)), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()

    metrics = {
        "dataset": "mnist5k",
        "train_split": "train (4,500 digits)",
        "test_split": "test (500 digits, evaluated after training only; no selection within a run)",
        "train_accuracy": round(accuracy(model, x_train, y_train), 4),
        "test_accuracy": round(accuracy(model, x_test, y_test), 4),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "num_parameters": model.num_parameters(),
        "train_seconds": round(time.time() - start, 1),
        "torch_version": torch.__version__,
        "command": "python examples/train_mnist_classifier.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    out = Path(args.out)
    model.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
