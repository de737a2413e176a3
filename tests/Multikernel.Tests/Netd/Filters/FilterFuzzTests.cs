using Multikernel.Netd.Filters;
using Xunit.Abstractions;

namespace Multikernel.Tests.Netd.Filters;

/// <summary>
/// The parser and the classifier against the reference evaluators, on random filters and random
/// frames (plus frames built to hit a filter). Each seed is logged; rerun one with
/// MULTIKERNEL_FILTER_SEED=N.
/// </summary>
public sealed class FilterFuzzTests(ITestOutputHelper output)
{
    [Fact]
    public void Parser_AgreesWithTheReferenceOnEveryTextAndFrame()
    {
        int checkedFrames = 0;
        int matches = 0;
        int contradictions = 0;
        foreach (int seed in FilterFuzz.Seeds(4))
        {
            output.WriteLine($"seed {seed}");
            var fuzz = new FilterFuzz(seed);
            for (int i = 0; i < 1500; i++)
            {
                string text = fuzz.Text();
                bool parsed = FilterSyntax.TryParse(text, out FilterProgram? program, out FilterSyntaxError error);
                for (int k = 0; k < 12; k++)
                {
                    byte[] frame = parsed && k % 3 == 0 ? fuzz.HitFrame(program!.Atoms) : fuzz.Frame();
                    bool expected = FilterReference.TextMatches(text, frame);
                    if (parsed)
                    {
                        bool actual = program!.Matches(frame);
                        Assert.True(expected == actual, $"seed {seed}: '{text}' on {Convert.ToHexString(frame)}: reference {expected}, compiled {actual} ({program})");
                        matches += actual ? 1 : 0;
                    }
                    else
                    {
                        // The only errors generated texts can have are contradictions; then nothing may match.
                        Assert.True(error.Message.Contains("contradicts", StringComparison.Ordinal), $"seed {seed}: '{text}': {error}");
                        Assert.False(expected, $"seed {seed}: '{text}' was refused as contradictory but the reference matches {Convert.ToHexString(frame)}");
                    }

                    checkedFrames++;
                }

                contradictions += parsed ? 0 : 1;
            }
        }

        output.WriteLine($"{checkedFrames} frames, {matches} matches, {contradictions} contradictory texts");
        Assert.True(matches > checkedFrames / 20, $"the generator must hit filters often enough to test anything ({matches} of {checkedFrames})");
        Assert.True(contradictions > 0, "the generator must produce contradictory texts too");
    }

    [Fact]
    public void Classifier_AgreesWithTheReferenceOnRandomFilterSetsAndFrames()
    {
        int matched = 0;
        int frames = 0;
        int overlapsRefused = 0;
        foreach (int seed in FilterFuzz.Seeds(6))
        {
            output.WriteLine($"seed {seed}");
            var fuzz = new FilterFuzz(seed);
            for (int round = 0; round < 25; round++)
            {
                var classifier = new PacketClassifier();
                var installed = new List<(int Id, int Owner, FilterAtom[] Atoms)>();
                int owners = 1 + fuzz.Random.Next(3);
                int count = 1 + fuzz.Random.Next(round % 5 == 0 ? 200 : 40);
                for (int i = 0; i < count; i++)
                {
                    int owner = 1 + fuzz.Random.Next(owners);
                    FilterInstallResult result = fuzz.Random.Next(4) == 0
                        ? classifier.Install(FilterProgram.FromAtoms(fuzz.Atoms()), owner)
                        : classifier.Install(fuzz.Text(), owner);
                    if (result.Succeeded)
                    {
                        FilterInfo info = classifier.List()[^1];
                        Assert.Equal(result.FilterId, info.Id);
                        installed.Add((result.FilterId, owner, Atoms(classifier, result.FilterId)));
                    }
                    else
                    {
                        overlapsRefused += result.Problem.Reason == FilterRejection.Overlap ? 1 : 0;
                        Assert.True(result.Problem.Reason is FilterRejection.Overlap or FilterRejection.Contradictory or FilterRejection.Syntax, $"seed {seed}: {result}");
                    }
                }

                for (int step = 0; step < 3; step++)
                {
                    frames += CheckAgreement(seed, fuzz, classifier, installed, ref matched);

                    // Remove some filters and check again: the rebuilt trie must agree too.
                    foreach ((int id, _, _) in installed.Where(_ => fuzz.Random.Next(3) == 0).ToList())
                    {
                        Assert.True(classifier.Remove(id));
                        installed.RemoveAll(f => f.Id == id);
                    }
                }
            }
        }

        output.WriteLine($"{frames} frames, {matched} matched, {overlapsRefused} overlaps refused");
        Assert.True(matched > frames / 5, $"too few matches to test anything ({matched} of {frames})");
        Assert.True(overlapsRefused > 0, "the generator must produce overlapping filters of different owners");
    }

    private static int CheckAgreement(int seed, FilterFuzz fuzz, PacketClassifier classifier, List<(int Id, int Owner, FilterAtom[] Atoms)> installed, ref int matched)
    {
        var reference = installed.Select(f => (f.Id, f.Atoms)).ToList();
        int n = 0;
        for (int k = 0; k < 300; k++)
        {
            byte[] frame = installed.Count > 0 && k % 2 == 0
                ? fuzz.HitFrame(installed[fuzz.Random.Next(installed.Count)].Atoms)
                : fuzz.Frame();
            int expected = FilterReference.FirstMatch(reference, frame);
            ClassifyResult actual = classifier.Classify(frame);
            Assert.True(expected == actual.FilterId, $"seed {seed}: frame {Convert.ToHexString(frame)}: reference {expected}, trie {actual.FilterId}; filters: {string.Join(" | ", classifier.List().Select(f => $"{f.Id}@{f.Owner}: {f.Filter}"))}");
            Assert.Equal(expected, classifier.ClassifyEachInTurn(frame));
            if (expected != 0)
            {
                matched++;
                Assert.Equal(installed.Single(f => f.Id == expected).Owner, actual.Owner);
            }

            // Overlap soundness: no frame may match filters of two different owners.
            int[] owners = [.. installed.Where(f => FilterReference.AtomsMatch(f.Atoms, frame)).Select(f => f.Owner).Distinct()];
            Assert.True(owners.Length <= 1, $"seed {seed}: frame {Convert.ToHexString(frame)} matches filters of owners {string.Join(",", owners)}");
            n++;
        }

        return n;
    }

    private static FilterAtom[] Atoms(PacketClassifier classifier, int id) =>
        classifier.GetProgram(id)!.Atoms.ToArray();
}
